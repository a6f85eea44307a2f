"""Sweeps beyond Hydra's basic launcher: the hparams_search configs and the README's launcher commands
compose (default suite), a job's status.json records its start and end, and in the slow suite real
sweeps run under submitit_local, joblib and Optuna, with a failed job reported and exit code 1."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from sgp_lightning.errors import SGPError
from sgp_lightning.sweep import STATUS_FILE, UNFINISHED, failed_jobs, report_failed_jobs, run_sweep_job
from tests.conftest import CONF, ROOT, TINY, hydra_conf, run_cli

SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
PLUGIN = {  # the module each sweep plugin installs (the `sweeps` extra)
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit": "hydra_plugins.hydra_submitit_launcher",
    "optuna": "hydra_plugins.hydra_optuna_sweeper",
}


def _needs_plugins(words: str) -> None:
    """Skip the calling test when `words` names a sweep plugin that is not installed."""
    for name, module in PLUGIN.items():
        if name in words:
            pytest.importorskip(module, reason=f'pip install -e ".[sweeps]" for {name}')


def _compose_sweep(args: list[str]):
    """Compose train.yaml (with its hydra node) as `python train.py -m ARGS` would: the fixed overrides are
    applied, the swept ones (`a=1,2`, `interval(…)`) are left to the sweeper and returned as keys."""
    parsed = OverridesParser.create().parse_overrides(args)
    fixed = [arg for arg, o in zip(args, parsed, strict=True) if not o.is_sweep_override()]
    with hydra_conf():
        cfg = compose(config_name="train", overrides=fixed, return_hydra_config=True)
    return cfg, [o.key_or_group for o in parsed if o.is_sweep_override()]


def _readme_sweep_commands() -> list[str]:
    """The `python train.py -m` commands of the README's "Parallel and cluster sweeps" subsection."""
    section = (ROOT / "README.md").read_text().split("### Parallel and cluster sweeps", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [line for line in block.splitlines() if line.startswith("python train.py -m")]


@pytest.mark.parametrize("search", SEARCHES)
def test_every_hparams_search_composes_and_sweeps_existing_keys(search):
    _needs_plugins(search)
    cfg, _ = _compose_sweep([f"hparams_search={search}"])
    assert cfg.optimized_metric == "plan/cost_achieved"
    for key in cfg.hydra.sweeper.params:  # a renamed config key must break the search, not sweep nothing
        assert OmegaConf.select(cfg, key) is not None, f"hparams_search={search} sweeps unknown key {key}"


def _optuna_space(cfg) -> dict:
    """The Optuna distributions the sweeper builds from `hydra.sweeper.params`, by config key."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    assert not fixed, f"fixed values in the search space: {fixed}"
    return space


def test_pit_optuna_searches_beta_log_uniformly_and_keeps_sigma_min_below_sigma_max():
    _needs_plugins("optuna")
    from hydra.utils import instantiate
    from optuna.distributions import LogUniformDistribution, UniformDistribution
    from optuna.samplers import TPESampler

    cfg, _ = _compose_sweep(["hparams_search=pit_optuna", "seed=7"])
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "minimize" and sweeper.n_trials > 0
    sampler = instantiate(sweeper.sampler)
    assert isinstance(sampler, TPESampler) and sweeper.sampler.seed == 7  # seeded by the run's seed
    space = _optuna_space(cfg)
    assert set(space) == {"planner.beta", "domain.sigma_max", "domain.sigma_min"}
    assert isinstance(space["planner.beta"], LogUniformDistribution) and space["planner.beta"].low > 0
    assert isinstance(space["domain.sigma_max"], UniformDistribution)
    assert space["domain.sigma_min"].high < space["domain.sigma_max"].low  # every trial's range decreases


@pytest.mark.parametrize("command", _readme_sweep_commands(), ids=lambda c: c.split(" -m ", 1)[1].split()[0])
def test_readme_sweep_command_composes(command):
    args = shlex.split(command, comments=True)[3:]  # after `python train.py -m`
    _needs_plugins(command)
    cfg, swept = _compose_sweep(args)
    for key in swept:
        assert OmegaConf.select(cfg, key) is not None, f"README sweeps unknown key {key}: {command}"
    launcher = next((a.split("=")[1] for a in args if a.startswith("hydra/launcher=")), None)
    if launcher is not None:
        assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher


def test_readme_shows_each_launcher_and_the_optuna_search():
    commands = " ".join(_readme_sweep_commands())
    for override in ("joblib", "submitit_local", "submitit_slurm", "hparams_search=pit_optuna"):
        assert override in commands


@pytest.fixture
def sweep_job(tmp_path):
    """Hydra's job state as a sweep job sees it, with its output folder under tmp_path."""
    with hydra_conf():
        cfg = compose(config_name="train", overrides=["planner.beta=2"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "0")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    yield tmp_path / "0"
    HydraConfig.instance().cfg = None


def _status(folder):
    return json.loads((folder / STATUS_FILE).read_text())


def test_sweep_job_records_start_then_end_and_a_failure_returns_none(sweep_job, capsys):
    seen = []

    def job():
        seen.append(_status(sweep_job)["status"])  # what a job killed here would leave behind
        return 0.25

    assert run_sweep_job(job) == 0.25 and seen == ["started"]
    assert _status(sweep_job) == {"status": "finished", "overrides": ["planner.beta=2"]}

    def bad_job():
        raise SGPError("planner.beta must be ≥ 0")

    # None, not NaN: the Optuna sweeper records None as a failed trial, and a NaN would end its study.
    assert run_sweep_job(bad_job) is None
    assert (
        _status(sweep_job)["status"] == "failed" and _status(sweep_job)["error"] == "planner.beta must be ≥ 0"
    )
    assert "error: job" in capsys.readouterr().err


def test_a_job_that_never_ended_is_listed_as_unfinished(sweep_job, capsys):
    def killed():
        raise SystemExit(137)  # not an Exception: like a kill, it leaves the "started" status behind

    with pytest.raises(SystemExit):
        run_sweep_job(killed)
    (sweep_job.parent / "1").mkdir()
    (sweep_job.parent / "1" / STATUS_FILE).write_text(json.dumps({"status": "finished", "overrides": []}))
    assert [job["error"] for job in failed_jobs(sweep_job.parent)] == [UNFINISHED]
    assert report_failed_jobs(sweep_job.parent) == 1
    err = capsys.readouterr().err
    assert f"failed: {sweep_job} (planner.beta=2): {UNFINISHED}" in err
    assert "error: 1 job(s) of the sweep failed; 1 finished" in err


def _metrics(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def _statuses(sweep):
    return {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/status.json")}


@pytest.mark.slow
def test_submitit_local_runs_each_job_as_its_own_process_and_reports_a_failed_one(tmp_path):
    _needs_plugins("submitit")
    sweep = tmp_path / "sweep"
    args = ["hydra/launcher=submitit_local", "planner.beta=0,1,-1", f"hydra.sweep.dir={sweep}", "logger=none"]
    proc = run_cli("train.py", "-m", *TINY, *args, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 job(s) of the sweep failed; 2 finished" in proc.stderr
    assert _statuses(sweep) == {"0": "finished", "1": "finished", "2": "failed"}
    metrics = _metrics(sweep)
    assert sorted(metrics) == ["0", "1"] and [metrics[j]["hparams"]["beta"] for j in "01"] == [0.0, 1.0]
    assert all(math.isfinite(m["metrics"]["plan/cost_achieved"]) for m in metrics.values())
    # submitit started each job as a process of its own, with its own logs and result file
    assert len(list(sweep.glob(".submitit/*/*_0_result.pkl"))) == 3
    assert "beta must be ≥ 0" in "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))


@pytest.mark.slow
def test_joblib_runs_jobs_in_worker_processes_and_reports_a_failed_one(tmp_path):
    _needs_plugins("joblib")
    sweep = tmp_path / "sweep"
    args = [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "planner.beta=1,-1",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli("train.py", "-m", *TINY, *args, "logger=none", timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 job(s) of the sweep failed; 1 finished" in proc.stderr and "Traceback" not in proc.stderr
    assert _statuses(sweep) == {"0": "finished", "1": "failed"} and sorted(_metrics(sweep)) == ["0"]


@pytest.mark.slow
def test_optuna_three_trials_in_the_search_space_and_the_best_one_recorded(tmp_path):
    _needs_plugins("optuna")
    sweep = tmp_path / "sweep"
    args = ["hparams_search=pit_optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"]
    proc = run_cli("train.py", "-m", *args, *TINY, "logger=none", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _metrics(sweep)
    assert sorted(metrics) == ["0", "1", "2"] and set(_statuses(sweep).values()) == {"finished"}
    space = _optuna_space(_compose_sweep(["hparams_search=pit_optuna"])[0])
    for key, distribution in space.items():  # each trial trained with the values Optuna proposed
        values = [m["hparams"][key.split(".")[-1]] for m in metrics.values()]
        assert all(distribution.low <= v <= distribution.high for v in values), (key, values)
    assert len({m["hparams"]["beta"] for m in metrics.values()}) == 3  # three proposals, not one
    achieved = {job: m["metrics"]["plan/cost_achieved"] for job, m in metrics.items()}
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_job = min(achieved, key=achieved.get)
    assert best["best_value"] == pytest.approx(achieved[best_job])
    assert best["best_params"]["planner.beta"] == pytest.approx(metrics[best_job]["hparams"]["beta"])


@pytest.mark.slow
def test_optuna_sweep_whose_trials_all_fail_lists_them_and_exits_1(tmp_path):
    """All trials failed: the Optuna sweeper raises at the end (no best trial), Hydra skips the end-of-sweep
    callback, and the failed jobs are still listed as the command exits."""
    _needs_plugins("optuna")
    sweep = tmp_path / "sweep"
    args = ["hparams_search=pit_optuna", "hydra.sweeper.n_trials=2", "planner.beta=interval(-2,-1)"]
    proc = run_cli("train.py", "-m", *args, f"hydra.sweep.dir={sweep}", *TINY, "logger=none", timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        proc.stderr.count("failed: ") == 2
        and "error: 2 job(s) of the sweep failed; 0 finished" in proc.stderr
    )
    assert _statuses(sweep) == {"0": "failed", "1": "failed"}
