"""Resumable reproductions: a rerun on the same output_dir reuses every finished piece keyed by its
settings; a changed override re-runs only what it changes; a run killed after a seed's training resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgp_lightning.analysis.common import results_numbers
from sgp_lightning.reproduce import reproduce
from tests.conftest import ROOT, TINY, compose_config, hydra_conf, hydra_list

PLAN_SHRINK = ["planners.sgp.optimizer.iterations=5", "planners.vanilla.optimizer.iterations=5"]


def _entry(out: Path, seeds: str = "[0,1]", plan=PLAN_SHRINK) -> list[str]:
    """The pit entry shrunk to seconds."""
    return [
        "reproduce=pit",
        f"reproduce.seeds={seeds}",
        f"reproduce.train_overrides={hydra_list(['experiment=pit', *TINY])}",
        f"reproduce.plan_overrides={hydra_list(plan)}",
    ]


def _run(out: Path, overrides: list[str]) -> dict:
    cfg = compose_config("reproduce", overrides, out)
    with hydra_conf():
        return reproduce(cfg)


def _mtimes(out: Path, pattern: str) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob(pattern))}


def test_rerun_reuses_finished_pieces_and_a_changed_override_reruns_only_its_pieces(tmp_path):
    out = tmp_path / "repro"
    first = _run(out, _entry(out, seeds="[0]"))
    checkpoints = _mtimes(out, "runs/seed_*/checkpoints/last.ckpt")
    plans = _mtimes(out, "runs/seed_*/plan/methods/results.json")
    assert len(checkpoints) == 1 and len(plans) == 1

    again = _run(out, _entry(out, seeds="[0]"))
    assert results_numbers(again) == results_numbers(first)
    assert _mtimes(out, "runs/seed_*/checkpoints/last.ckpt") == checkpoints  # not retrained
    assert _mtimes(out, "runs/seed_*/plan/methods/results.json") == plans  # not re-planned

    changed = _run(out, _entry(out, seeds="[0]", plan=[*PLAN_SHRINK, "planners.sgp.optimizer.lr=0.02"]))
    assert _mtimes(out, "runs/seed_*/checkpoints/last.ckpt") == checkpoints  # the training is unchanged
    replanned = _mtimes(out, "runs/seed_*/plan/methods/results.json")
    assert all(replanned[k] != plans[k] for k in plans)  # the plans it changes ran again
    assert changed["methods"]["sgp"]["per_seed"][0]["planner"]["optimizer"]["lr"] == 0.02

    fresh = _run(out, [*_entry(out, seeds="[0]"), "reproduce.fresh=true"])
    assert all(v != checkpoints[k] for k, v in _mtimes(out, "runs/seed_*/checkpoints/last.ckpt").items())
    assert results_numbers(fresh) == results_numbers(first)  # seeded: retraining gives the same table


@pytest.mark.slow
def test_reproduction_killed_after_a_seeds_training_resumes_with_the_same_results(tmp_path):
    """SIGKILL after seed 0's training, run again: seed 0 is not retrained and results.json equals an
    uninterrupted run's."""
    command = [sys.executable, "reproduce.py", "pit"]

    def args(out: Path) -> list[str]:
        return [f"output_dir={out}", *_entry(out)[1:]]

    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "PATH": "/usr/bin:/bin"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*command, *args(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    marker = killed / "runs" / "seed_0" / ".finished"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "seed 0's training never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    checkpoint = killed / "runs" / "seed_0" / "checkpoints" / "last.ckpt"
    trained_at = checkpoint.stat().st_mtime_ns

    subprocess.run([*command, *args(killed)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run([*command, *args(uninterrupted)], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    assert checkpoint.stat().st_mtime_ns == trained_at  # seed 0 was not retrained
    resumed = json.loads((killed / "results.json").read_text())
    reference = json.loads((uninterrupted / "results.json").read_text())
    assert results_numbers(resumed) == results_numbers(reference)


@pytest.mark.slow  # two spawned interpreters import torch and Lightning: ~40 s on 2 cores
def test_two_workers_give_the_same_table_as_one(tmp_path):
    """reproduce.workers=2 runs the seeds as two processes; every seed is seeded on its own, so the table
    equals a sequential run's."""
    sequential = _run(tmp_path / "one", _entry(tmp_path / "one"))
    parallel = _run(tmp_path / "two", [*_entry(tmp_path / "two"), "reproduce.workers=2"])
    assert results_numbers(parallel) == results_numbers(sequential)
    assert len(parallel["methods"]["sgp"]["per_seed"]) == 2


TUNED_ON_SEED_5 = [
    "+reproduce.tune.train_seed=5",
    "reproduce.tune.betas=[0.1,1]",
    "reproduce.tune.methods=[sgp]",
]


def test_a_grid_planned_one_beta_at_a_time_gives_the_whole_grids_numbers(tmp_path):
    """Where the evaluator runs each β alone (here stack_methods=false; the D4RL episodes), the tuning plans
    each β apart (so several workers can share them), into tune/sgp/beta_B, with the numbers of one plan of
    the whole grid (plan.py betas=[…]) on the same checkpoint."""
    from sgp_lightning.plan import compose_plan_config, plan

    unstacked = [*PLAN_SHRINK, "stack_methods=false"]
    results = _run(tmp_path, [*_entry(tmp_path, seeds="[0]", plan=unstacked), *TUNED_ON_SEED_5])
    tune_dir = tmp_path / "runs" / "tune_seed_5" / "tune" / "sgp"
    assert sorted(p.name for p in tune_dir.iterdir() if p.is_dir()) == ["beta_0.1", "beta_1"]
    task_seed = results["tuning"]["task_seed"]
    with hydra_conf():
        whole_grid = plan(
            compose_plan_config(
                [*unstacked, "methods=[sgp]", "betas=[0.1,1]", f"task_seed={task_seed}", "track_true_cost_every=null",
                 f"ckpt_path='{tmp_path / 'runs' / 'tune_seed_5' / 'checkpoints' / 'last.ckpt'}'", "seed=5",
                 f"output_dir='{tmp_path / 'whole_grid'}'", "video=false"]
            )
        )  # fmt: skip
    achieved = results["tuning"]["per_dataset"]["None"]["sgp"]["achieved_by_beta"]
    assert achieved == {b: whole_grid["methods"][f"sgp@beta={b}"]["cost_achieved"] for b in ["0.1", "1"]}


@pytest.mark.slow  # spawned interpreters, as above
@pytest.mark.parametrize(
    "overrides", [["stack_methods=true"], ["stack_methods=false", "+reproduce.checkpoints=[last,best]"]]
)
def test_two_workers_train_the_table_seeds_beside_the_tuning_seed_with_the_same_table(tmp_path, overrides):
    """With tune.train_seed, two workers train the tuning seed and the table's seeds, then share the tuning
    plans (one per β where the evaluator runs each β alone: stack_methods=false), then plan the table with
    the chosen β (each checkpoint's plans a job of their own, as D4RL's last and best): the table equals a
    sequential run's, with fresh=true as well (equal numbers do not show whether a seed was trained once or
    twice; that was checked by hand, from the log)."""
    plan, entry = [*PLAN_SHRINK, overrides[0]], [*TUNED_ON_SEED_5, *overrides[1:]]
    sequential = _run(tmp_path / "one", [*_entry(tmp_path / "one", plan=plan), *entry])
    out = tmp_path / "two"
    parallel = _run(out, [*_entry(out, plan=plan), *entry, "reproduce.workers=2", "reproduce.fresh=true"])
    assert results_numbers(parallel) == results_numbers(sequential)
    assert parallel["tuning"] == sequential["tuning"] and (out / "runs" / "tune_seed_5" / "tune").is_dir()


def test_plans_of_one_seed_split_over_jobs_gather_into_its_run():
    """A seed's last and best checkpoints planned as two jobs give the run one job would: the plans
    together, a best that is the last checkpoint (None from its job) filled with the last's plan, and the
    distance errors of the job that planned the last."""
    from sgp_lightning.reproduce import _gather

    last_plan, best_plan = {"methods": {"sgp": 1.0}}, {"methods": {"sgp": 2.0}}
    one_job = (
        [("d", 0, ("last", "best"))],
        [{"plans": {"last": last_plan, "best": last_plan}, "tuned": {}, "distance_errors": [3]}],
    )
    split = (
        [("d", 0, ("last",)), ("d", 0, ("best",)), ("d", 1, ("last",)), ("d", 1, ("best",))],
        [{"plans": {"last": last_plan}, "tuned": {}, "distance_errors": [3]},
         {"plans": {"best": None}, "tuned": {}, "distance_errors": None},
         {"plans": {"last": last_plan}, "tuned": {}, "distance_errors": [4]},
         {"plans": {"best": best_plan}, "tuned": {}, "distance_errors": None}],
    )  # fmt: skip
    runs = _gather([("d", 0), ("d", 1)], *split)
    assert runs[("d", 0)] == _gather([("d", 0)], *one_job)[("d", 0)]
    assert runs[("d", 1)] == {
        "plans": {"last": last_plan, "best": best_plan},
        "tuned": {},
        "distance_errors": [4],
    }
    assert list(runs) == [("d", 0), ("d", 1)] and list(runs[("d", 1)]["plans"]) == ["last", "best"]


def test_last_checkpoint_is_the_final_epoch_and_an_older_one_is_trained_again(tmp_path, caplog):
    """last.ckpt holds the state after the latest epoch even when val/loss got no better there (Lightning
    >= 2.6 wrote save_last's copy only with a new best epoch), and a finished run whose last.ckpt is an
    earlier epoch (as such runs left) is trained again from scratch, not reused."""
    import shutil

    import torch

    from sgp_lightning.pieces import settings_key, train_piece

    run = tmp_path / "run"
    # mode=max: val/loss falls while training, so the "best" epoch is the first and never the last
    overrides = ["experiment=pit", *TINY, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max"]
    cfg = compose_config("train", overrides, run)
    key, trained = train_piece(run, cfg)
    assert trained is not None
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "epoch_000.ckpt"
    steps = trained["trainer"].global_step
    assert torch.load(last, weights_only=True)["global_step"] == steps
    assert torch.load(best, weights_only=True)["global_step"] < steps
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    # which checkpoint files a run writes is not what it learns: the key ignores the writers
    other = compose_config("train", [*overrides, "callbacks.model_checkpoint.save_top_k=2"], run)
    assert settings_key(other) == key
    assert train_piece(run, cfg) == (key, None)  # reused
    # a run finished under the old writers: its last.ckpt was the best epoch's copy
    shutil.copy(best, last)
    (run / "plan").mkdir()
    with caplog.at_level("WARNING", logger="sgp_lightning"):
        _, again = train_piece(run, cfg)
    assert again is not None and "not the final state" in caplog.text
    assert torch.load(last, weights_only=True)["global_step"] == steps
    assert not (run / "plan").exists()  # plans of the replaced checkpoint went with it


@pytest.mark.parametrize(
    ("trainer", "epoch", "step", "ended"),
    [
        ({"max_epochs": 3}, 2, 30, True),
        ({"max_epochs": 3}, 1, 20, False),
        ({"max_steps": 30}, 2, 30, True),
        ({"max_steps": 30}, 5, 29, False),  # max_epochs unset beside max_steps: no epoch bound
        ({"max_epochs": 3, "max_steps": 30}, 2, 29, True),  # whichever bound comes first
        ({}, 999, 9990, True),  # neither set: Lightning's 1000 epochs
        ({}, 2, 30, False),
        ({"max_epochs": -1, "max_steps": -1}, 2, 30, True),  # unbounded: ended by other means
        ({"max_time": "00:00:10:00"}, 2, 30, True),  # a time limit: Lightning sets no epoch bound
    ],
)
def test_ended_there_follows_lightnings_bounds(tmp_path, trainer, epoch, step, ended):
    import torch
    from omegaconf import OmegaConf

    from sgp_lightning.pieces import ended_there

    checkpoint = tmp_path / "last.ckpt"
    torch.save({"epoch": epoch, "global_step": step}, checkpoint)
    assert ended_there(checkpoint, OmegaConf.create(trainer)) is ended


def test_a_training_to_reuse_only_that_never_finished_is_refused_not_trained(tmp_path):
    """After an entry's training phase its jobs only read the trainings (several at once): a folder without
    the finished training is one clear error, never a training started by each of them."""
    from omegaconf import OmegaConf

    from sgp_lightning.pieces import train_piece
    from tests.conftest import raises_user_error

    with raises_user_error("holds no finished training with these settings"):
        train_piece(tmp_path / "run", OmegaConf.create({"seed": 0}), reuse_only=True)
    assert not (tmp_path / "run").exists()
