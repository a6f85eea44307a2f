"""The README's two set-up commands are the ones CI runs."""

import re

from tests.conftest import ROOT


def _setup_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    main_job, tests = _setup_commands()
    assert "python train.py" in main_job and "pip install torch==2.13.0" in main_job
    assert tests.endswith("pytest") and "[dev]" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines, "the README's test command must appear verbatim in .ci/run"
