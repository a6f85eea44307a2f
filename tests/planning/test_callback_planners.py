"""Every planner in conf/planner/ plans inside the PlanningCallback on a tiny pit run, and the experiment's
planner set reaches the callback, the checkpoint and plan.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sgp_lightning.models import SGPSystem
from sgp_lightning.plan import compose_plan_config, plan
from sgp_lightning.train import train
from tests.conftest import CONF, TINY, compose_config, hydra_conf

PLANNERS = sorted(p.stem for p in (CONF / "planner").glob("*.yaml") if not p.name.startswith("_"))
# Every part any planner needs: an ensemble (ensemble, cem, sgp_ensemble), a distance estimator
# (cem_distance) and the policy baselines' parts (bc, td3bc, iql).
ALL_PARTS = [
    "model.ensemble={num_members: 2, hidden_dims: [16]}",
    "model.distance={hidden_dims: [16], num_levels: 2, reference_size: 200, queries_per_step: 32}",
    "model.policy={hidden_dims: [16]}",
    "model.td3bc={hidden_dims: [16]}",
    "model.iql={hidden_dims: [16]}",
]
POLICIES = ("bc", "td3bc", "iql")  # PolicyPlanners: no optimiser


def test_every_planner_is_listed():
    assert {
        "sgp",
        "vanilla",
        "ensemble",
        "cem",
        "cem_distance",
        "sgp_ensemble",
        "data_landing",
        *POLICIES,
    } <= set(PLANNERS)


@pytest.mark.parametrize("planner", PLANNERS)
def test_planner_runs_in_the_planning_callback(planner, tmp_path: Path):
    tiny = [o for o in TINY if not o.startswith("planner.")]  # the BC policy has no optimiser
    overrides = [*tiny, *ALL_PARTS, f"planner={planner}", "callbacks.score_field=null"]
    if planner not in POLICIES:
        overrides.append("planner.optimizer.iterations=3")
    metrics, _ = train(compose_config("train", overrides, tmp_path / "run"))
    for name in ("plan/cost_planned", "plan/cost_achieved", "plan/model_error"):
        assert torch.isfinite(torch.tensor(metrics[name])), (planner, name)


def test_experiment_planner_set_reaches_callback_checkpoint_and_plan(tmp_path: Path):
    """experiment=stitching names planner_set=stitching once: the callback plans with its SGP settings, the
    checkpoint records it, and plan.py plans with it by default; planners.sgp.beta= still overrides."""
    shrink = ["domain.datamodule.num_samples=1500", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
              "model.dynamics.hidden_dims=[16]", "model.score.hidden_dims=[16]", "callbacks.score_field=null",
              "domain.env.num_tasks=2"]  # fmt: skip
    cfg = compose_config("train", ["experiment=stitching", *shrink], tmp_path / "run")
    assert cfg.planner.beta == 0.3 and cfg.planner.optimizer.iterations == 500
    cfg.planner.optimizer.iterations = 3
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert SGPSystem.load_from_checkpoint(ckpt).planner_set == "stitching"
    common = [f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'plan'}", "methods=[sgp]",
              "planners.sgp.optimizer.iterations=2"]  # fmt: skip
    with hydra_conf():
        default = compose_plan_config(common)
        overridden = compose_plan_config([*common, "planners.sgp.beta=3"])
    assert default.planner_set == "stitching" and default.planners.sgp.beta == 0.3
    assert overridden.planners.sgp.beta == 3
    payload = plan(default)
    assert (
        json.loads((tmp_path / "plan" / "results.json").read_text())["methods"]["sgp"]["planner"]["beta"]
        == 0.3
    )
    assert payload["methods"]["sgp"]["cost_achieved"] > 0


def test_callback_plans_after_the_last_validation_of_a_max_steps_run(tmp_path: Path):
    """A run bounded by trainer.max_steps (D4RL's paper sizes: max_epochs=-1, validation every N steps)
    still plans after its final validation, and only there when every_n_epochs is not reached."""
    from callbacks.planning import PlanningCallback

    steps_run = []
    original = PlanningCallback.on_validation_epoch_end

    def recording(self, trainer, pl_module):
        before = self.last_metrics
        original(self, trainer, pl_module)
        if self.last_metrics is not before:
            steps_run.append(trainer.global_step)

    overrides = [*TINY, "callbacks.score_field=null", "trainer.max_epochs=-1", "+trainer.max_steps=8",
                 "+trainer.val_check_interval=4", "trainer.check_val_every_n_epoch=null",
                 "callbacks.planning.every_n_epochs=1000", "+trainer.num_sanity_val_steps=0"]  # fmt: skip
    PlanningCallback.on_validation_epoch_end = recording
    try:
        metrics, _ = train(compose_config("train", overrides, tmp_path / "run"))
    finally:
        PlanningCallback.on_validation_epoch_end = original
    assert steps_run == [8]  # validations at steps 4 and 8 (TINY has 6 batches per epoch); plans at 8 only
    assert "plan/cost_achieved" in metrics


def test_validation_planning_leaves_the_trained_weights_unchanged(tmp_path: Path):
    """Planning during validation draws nothing from the global torch RNG (the score loss's noise): a run
    that plans after every epoch ends with the same weights as one without the callback."""
    overrides = [*TINY, "trainer.max_epochs=2", "callbacks.score_field=null"]
    weights = {}
    for name, planning in (
        ("every", ["callbacks.planning.every_n_epochs=1"]),
        ("none", ["callbacks.planning=null"]),
    ):
        _, objects = train(compose_config("train", [*overrides, *planning], tmp_path / name))
        weights[name] = objects["system"].state_dict()
    assert weights["every"].keys() == weights["none"].keys()
    assert all(torch.equal(weights["every"][k], weights["none"][k]) for k in weights["every"])
