import pytest

from sgp_lightning import SGPError
from sgp_lightning.utils import _find_user_error, clean_errors


class ProcessRaisedException(Exception):  # same name as torch.multiprocessing's, as ddp_spawn raises it
    pass


def test_user_error_is_found_behind_wrappers():
    try:
        try:
            raise SGPError("planner.beta must be ≥ 0")
        except SGPError as inner:
            raise RuntimeError("Error in call to target") from inner
    except RuntimeError as outer:
        assert str(_find_user_error(outer)) == "planner.beta must be ≥ 0"
    spawned = ProcessRaisedException(
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nsgp_lightning.errors.SGPError: dataset is empty: it has no transitions\n'
    )
    assert str(_find_user_error(spawned)) == "dataset is empty: it has no transitions"
    assert _find_user_error(ValueError("other")) is None


def test_clean_errors_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info, clean_errors():
        raise SGPError("horizon must be positive")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: horizon must be positive\n"
    with pytest.raises(KeyError), clean_errors():
        raise KeyError("a bug, not bad input: keeps its traceback")


def test_a_write_that_fails_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """results.json and table.md are written to a temporary name and renamed: a write killed or failing
    midway never leaves a half-written file that a later run would read as valid."""
    import json
    from pathlib import Path

    from sgp_lightning.utils import write_json

    target = write_json(tmp_path / "results.json", {"cost": 1.0})
    original = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        original(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(target, {"cost": 2.0, "methods": {"sgp": [0.5] * 100}})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"cost": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind
