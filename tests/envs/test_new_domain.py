"""A new domain is three files: an `Env` subclass, a datamodule and `conf/domain/<d>.yaml`.

The 1-D double integrator of double_integrator_domain/ lives only under tests/; its config directory joins
Hydra's search path, and the project's real train and plan configs train and plan it with no other edit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sgp_lightning.models import SGPSystem, read_hparams
from sgp_lightning.plan import plan
from sgp_lightning.train import train
from tests.conftest import TINY, compose_config
from tests.envs.double_integrator_domain.env import DoubleIntegratorEnv

DOMAIN_CONF = Path(__file__).resolve().parent / "double_integrator_domain" / "conf"
SEARCHPATH = f"hydra.searchpath=[file://{DOMAIN_CONF}]"

# The shared tiny run on the new domain; later overrides of a key win.
SMALL = [
    SEARCHPATH,
    "domain=double_integrator",
    *TINY,
    "domain.datamodule.num_samples=1000",
    "domain.datamodule.batch_size=250",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "callbacks.score_field=null",
]


def test_domain_defined_under_tests_trains_and_plans(tmp_path: Path):
    run = tmp_path / "run"
    metrics, objects = train(compose_config("train", SMALL, run))
    assert isinstance(objects["env"], DoubleIntegratorEnv)
    assert objects["trainer"].current_epoch == 2
    for name in ("plan/cost_planned", "plan/cost_achieved", "train/loss", "val/loss"):
        assert math.isfinite(metrics[name]), name  # the PlanningCallback planned the new domain's tasks

    ckpt = run / "checkpoints" / "last.ckpt"
    hparams = read_hparams(ckpt)
    assert hparams["domain"] == "double_integrator"
    assert list(hparams["state_shape"]) == [2] and list(hparams["action_shape"]) == [1]  # from the env
    env = SGPSystem.load_from_checkpoint(
        ckpt
    ).make_env()  # the checkpoint rebuilds the env defined under tests/
    assert isinstance(env, DoubleIntegratorEnv) and env.horizon == 8 and env.num_tasks == 3

    out = tmp_path / "plan"
    overrides = [
        f"ckpt_path={ckpt}",
        "methods=[sgp,vanilla]",
        "planners.sgp.optimizer.iterations=10",
        "planners.vanilla.optimizer.iterations=10",
    ]
    payload = plan(compose_config("plan", overrides, out))
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(payload))
    assert results["domain"] == "double_integrator" and results["num_tasks"] == 3
    assert set(results["methods"]) == {"sgp", "vanilla"}
    for method in results["methods"].values():
        assert math.isfinite(method["cost_planned"]) and math.isfinite(method["cost_achieved"])
        assert len(method["per_task"]) == 3
    assert (out / "plan.png").stat().st_size > 0  # the Env's default positions() and draw() plot it
