"""The commands as a user runs them: exit codes and messages, multirun sweeps, reports, reproduce, DDP."""

import json

import pytest

from sgp_lightning.train import train
from tests.conftest import TINY, compose_config, hydra_conf, hydra_list, raises_user_error, run_cli


def _error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "override, message",
    [
        ("planner.beta=-0.1", "planner.beta must be ≥ 0"),
        ("domain.sigma_max=0.01", "must be larger than sigma_min"),
        ("planner.horizon=0", "planner.horizon must be > 0"),
        ("domain.env.horizon=-2", "horizon must be > 0"),
        ("domain.datamodule.num_samples=0", "num_samples must be positive"),
        ("domain.env.action_limit=inf", "NaN or infinite values in 'u'"),
        ("model.reward=null", "cost_source=learned needs a reward model"),
        ("planner.optimizer.start_level=8", r"start_level must be in \[0, 7\]"),
        ("planner.penalty=null", "silently ignore β"),
    ],
    ids=[
        "negative-beta",
        "increasing-sigma",
        "zero-horizon",
        "negative-env-horizon",
        "zero-samples",
        "nan-data",
        "learned-cost-no-reward",
        "start-level",
        "penalty-none-beta",
    ],
)
def test_bad_config_values_are_one_clear_error(override, message, tmp_path):
    extra = ["planner.cost_source=learned"] if override == "model.reward=null" else []
    cfg = compose_config("train", [*TINY, override, *extra], tmp_path)
    with raises_user_error(message):
        train(cfg)


def test_a_bad_config_value_exits_2_with_one_clear_line(tmp_path):
    """The CLI contract: exit code 2 and one `error:` line, no traceback."""
    proc = run_cli("train.py", *TINY, "planner.beta=-0.1", f"paths.output_dir={tmp_path}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "planner.beta must be ≥ 0" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, listed", [("domain=nope", "pit"), ("planner=nope", "vanilla")])
def test_unknown_domain_or_planner_name_lists_the_choices(override, listed, tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=f"Could not find[\\s\\S]*{listed}"):
        compose_config("train", [override], tmp_path)


def test_plan_rejects_unknown_method_and_missing_checkpoint(tmp_path):
    from sgp_lightning.plan import compose_plan_config

    with hydra_conf(), raises_user_error(r"unknown planner\(s\) \['nope'\]"):
        compose_plan_config(["ckpt_path=/nonexistent.ckpt", "methods=[sgp,nope]", f"output_dir={tmp_path}"])
    with hydra_conf(), raises_user_error("checkpoint not found"):
        compose_plan_config(["ckpt_path=/nonexistent.ckpt", f"output_dir={tmp_path}"])


def test_multirun_with_a_failing_job_goes_on_then_sweep_report_then_plan_cli(tmp_path):
    """β = −1 fails (a bad value): its job records the failure, the two good jobs still run and write
    metrics.json, the sweep exits 1, and the report lists all three."""
    sweep = tmp_path / "sweep"
    proc = run_cli("train.py", "-m", *TINY, "planner.beta=0,-1,1", f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 job(s) of the sweep failed" in proc.stderr and "Traceback" not in proc.stderr
    # Each finished job ends with a summary: its folder, checkpoint, TensorBoard command and plan metrics.
    assert proc.stdout.count("Run finished: ") == 2 and proc.stdout.count("tensorboard --logdir ") == 2
    assert proc.stdout.count("plan/cost_achieved ") == 2 and "last.ckpt" in proc.stdout
    jobs = sorted(sweep.glob("*/metrics.json"))
    assert len(jobs) == 2
    assert sorted(json.loads(j.read_text())["hparams"]["beta"] for j in jobs) == [0.0, 1.0]
    assert all((j.parent / "checkpoints" / "last.ckpt").is_file() for j in jobs)
    statuses = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    assert {k: v["status"] for k, v in statuses.items()} == {"0": "finished", "1": "failed", "2": "finished"}
    assert (
        statuses["1"]["overrides"][-1] == "planner.beta=-1" and "beta must be ≥ 0" in statuses["1"]["error"]
    )
    assert not (sweep / "1" / "metrics.json").exists()

    report = run_cli("-m", "sgp_lightning.report", str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    assert (sweep / "sweep.md").is_file() and (sweep / "sweep.png").is_file()
    rows = [line for line in report.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| beta |") and {r.split("|")[1].strip() for r in rows[1:3]} == {"0", "1"}
    assert rows[3].startswith("| job |") and rows[4].startswith("| 1 |") and "planner.beta=-1" in rows[4]

    out = tmp_path / "plan"
    proc = run_cli(
        "plan.py",
        f"ckpt_path={jobs[0].parent}/checkpoints/last.ckpt",
        f"output_dir={out}",
        "planners.sgp.optimizer.iterations=5",
        "planners.vanilla.optimizer.iterations=5",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| sgp |" in proc.stdout and (out / "results.json").is_file() and (out / "plan.png").is_file()


def test_reproduce_cli_runs_a_shrunken_entry(tmp_path):
    """The reproduce.py command as a user runs it (the pipeline itself is tested in-process in
    tests/reproduce/): a shrunken β sweep writes its table and figure, and an unknown entry is refused."""
    plan_shrink = ["planners.sgp.optimizer.iterations=5", "planners.vanilla.optimizer.iterations=5"]
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "reproduce.py",
        "pit_beta_sweep",
        f"output_dir={sweep_dir}",
        "reproduce.seeds=[0]",
        "reproduce.beta_sweep=[0.0,1.0]",
        f"reproduce.train_overrides={hydra_list(['experiment=pit', *TINY])}",
        f"reproduce.plan_overrides={hydra_list(plan_shrink)}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((sweep_dir / "results.json").read_text())
    assert set(results["methods"]) == {"beta=0", "beta=1"} and results["seeds"] == [0]
    assert results["command"].startswith(
        f"python reproduce.py pit_beta_sweep output_dir={sweep_dir} 'reproduce.seeds=[0]' "
    )
    assert "| beta=1 |" in (sweep_dir / "table.md").read_text() and (sweep_dir / "sweep.png").is_file()
    bad = run_cli("reproduce.py", "nope", f"output_dir={tmp_path}")
    assert bad.returncode == 2 and "unknown reproduction" in bad.stderr


@pytest.mark.slow
def test_ddp_sim_two_cpu_processes(tmp_path):
    proc = run_cli("train.py", *TINY, "trainer=ddp_sim", f"paths.output_dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # Tasks were sharded over 2 ranks (3 tasks: 2 + 1) and reduced: the logged means must equal one
    # process planning all tasks with the final weights.
    import torch

    from sgp_lightning.models import SGPSystem
    from sgp_lightning.planning import plan_and_evaluate
    from tests.conftest import compose_config

    torch.set_num_threads(1)
    system = SGPSystem.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    planner = compose_config("train", list(TINY), tmp_path).planner
    ev = plan_and_evaluate(system, system.make_env(), system.make_env().tasks(), planner)
    for name in ("cost_planned", "cost_achieved", "model_error"):
        assert abs(getattr(ev, name).mean().item() - metrics[f"plan/{name}"]) < 1e-4, name
