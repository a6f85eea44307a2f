"""train() through Hydra compose, checkpoints, resume, plan() on a produced checkpoint, domain checks."""

import json

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from sgp_lightning import SGPError
from sgp_lightning.models import SGPSystem
from sgp_lightning.plan import plan
from sgp_lightning.planning import GradientPlanner, plan_and_evaluate
from sgp_lightning.train import train
from tests.conftest import TINY, compose_config


def test_train_fast_dev_run_logs_plan_metrics(train_cfg):
    with open_dict(train_cfg):
        train_cfg.trainer.fast_dev_run = True
    metrics, objects = train(train_cfg)
    for name in ("plan/cost_planned", "plan/cost_achieved", "plan/model_error", "train/loss", "val/loss"):
        assert name in metrics, name
    assert objects["system"].domain == "pit"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny training run shared by the tests below (1 epoch, checkpoints, TensorBoard)."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", list(TINY), out)
    metrics, _ = train(cfg)
    return out, metrics


def test_run_layout_checkpoint_and_tensorboard(trained_run):
    out, metrics = trained_run
    assert (out / "checkpoints" / "last.ckpt").is_file()
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    assert {"plan/cost_planned", "plan/cost_achieved", "plan/model_error"} <= scalars
    assert "plan/trajectories" in images and "score/field" in images
    # HParams view: the sweep's hyperparameters with plan/* registered as its metrics.
    hparams = acc.PluginTagToContent("hparams")
    assert (
        b"plan/cost_achieved" in hparams["_hparams_/experiment"]
        and b"beta" in hparams["_hparams_/experiment"]
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert (
        saved["hparams"]["beta"] == 1.0
        and saved["metrics"]["plan/cost_achieved"] == metrics["plan/cost_achieved"]
    )


def test_callback_metrics_equal_offline_evaluation_of_the_checkpoint(trained_run):
    """The PlanningCallback's plan/* values are those of the final weights (saved in last.ckpt)."""
    out, metrics = trained_run
    system = SGPSystem.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    cfg = compose_config("train", list(TINY), out).planner
    ev = plan_and_evaluate(system, system.make_env(), system.make_env().tasks(), cfg)
    for name in ("cost_planned", "cost_achieved", "model_error"):
        assert abs(getattr(ev, name).mean().item() - metrics[f"plan/{name}"]) < 1e-5, name


def test_checkpoint_is_self_contained(trained_run):
    out, _ = trained_run
    system = SGPSystem.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    assert system.domain == "pit" and system.make_env().pit_radius == 0.4
    assert not torch.allclose(system.score.pair_norm.std, torch.ones(4))  # normalizer stats were saved
    assert system.score.schedule.sigmas[0].item() == pytest.approx(0.5)


def _plan_config(trained_run, out, *overrides):
    """plan.yaml on the tiny run's last checkpoint, writing to `out`."""
    run, _ = trained_run
    return compose_config("plan", [f"ckpt_path={run}/checkpoints/last.ckpt", *overrides], out)


def _true_rollout_of_saved_actions(trained_run, trajectories, method):
    """The true env's rollout of a method's saved actions from its saved x0 (a fresh env, as a user would)."""
    run, _ = trained_run
    env = SGPSystem.load_from_checkpoint(run / "checkpoints" / "last.ckpt").make_env()
    x0 = torch.from_numpy(trajectories[f"{method}/true_states"][:, 0])
    return env.rollout(x0, torch.from_numpy(trajectories[f"{method}/actions"])).numpy()


def test_plan_on_produced_checkpoint_writes_results(trained_run, tmp_path):
    """results.json, plan.png, model_error_horizon.png and trajectories.npz: each method's plan (3 tasks,
    T = 8, 2-D states and actions) and its true rollout, which is the true env's rollout of the saved
    actions; model_error_horizon is the model's error k steps ahead, and its mean is model_error."""
    cfg = _plan_config(
        trained_run,
        tmp_path,
        "planners.sgp.optimizer.iterations=10",
        "planners.vanilla.optimizer.iterations=10",
    )
    payload = plan(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(payload))
    assert results["domain"] == "pit" and set(results["methods"]) == {"sgp", "vanilla"}
    for method in results["methods"].values():
        assert {"cost_planned", "cost_achieved", "model_error", "seconds", "per_task"} <= set(method)
        assert len(method["per_task"]) == 3
    assert (tmp_path / "plan.png").stat().st_size > 0
    trajectories = np.load(tmp_path / "trajectories.npz", allow_pickle=False)
    keys = ("actions", "planned_states", "true_states", "goal", "cost_planned", "cost_achieved")
    assert sorted(trajectories.files) == sorted(f"{m}/{k}" for m in ("sgp", "vanilla") for k in keys)
    tasks = SGPSystem.load_from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt").make_env().tasks()
    for method, result in payload["methods"].items():
        saved = {key: trajectories[f"{method}/{key}"] for key in keys}
        assert saved["actions"].shape == (3, 8, 2) and saved["actions"].dtype == np.float32
        assert saved["planned_states"].shape == saved["true_states"].shape == (3, 9, 2)
        np.testing.assert_array_equal(saved["true_states"][:, 0], tasks.x0.numpy())
        np.testing.assert_array_equal(saved["goal"], tasks.goal.numpy())
        np.testing.assert_array_equal(
            saved["true_states"], _true_rollout_of_saved_actions(trained_run, trajectories, method)
        )
        np.testing.assert_allclose(
            saved["cost_achieved"], [t["cost_achieved"] for t in result["per_task"]], rtol=1e-6
        )
        error = np.linalg.norm(saved["planned_states"] - saved["true_states"], axis=-1)[:, 1:]  # (tasks, T)
        np.testing.assert_allclose(result["model_error_horizon"], error.mean(0), rtol=1e-5)
        assert result["model_error"] == pytest.approx(np.mean(result["model_error_horizon"]), rel=1e-5)
    assert (tmp_path / "model_error_horizon.png").stat().st_size > 0


def test_plan_with_mpc(trained_run, tmp_path):
    cfg = _plan_config(
        trained_run, tmp_path, "mpc=true", "methods=[sgp]", "planners.sgp.optimizer.iterations=5",
        "planners.sgp.mpc.iterations=2", "planners.sgp.mpc.horizon=3",
    )  # fmt: skip
    result = plan(cfg)["methods"]["sgp"]
    assert result["cost_achieved"] > 0 and len(result["per_task"]) == 3
    # The states MPC met on the true env are the true rollout of the actions it executed.
    trajectories = np.load(tmp_path / "trajectories.npz", allow_pickle=False)
    assert trajectories["sgp/actions"].shape == (3, 8, 2)
    np.testing.assert_array_equal(
        trajectories["sgp/true_states"], _true_rollout_of_saved_actions(trained_run, trajectories, "sgp")
    )


def test_plan_with_learned_reward_as_cost(trained_run):
    """cost_source=learned: planned cost is −Σ r̂ on model states, achieved is −Σ r on true states."""
    out, _ = trained_run
    system = SGPSystem.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    env = system.make_env()
    tasks = env.tasks()
    planner = GradientPlanner(beta=0.0, cost_source="learned", optimizer={"iterations": 20, "lr": 0.02})
    ev = plan_and_evaluate(system, env, tasks, planner)
    with torch.no_grad():
        learned = -system.reward(ev.plan.states[:, :-1], ev.plan.actions).sum(1)
        true = -env.reward(ev.true_states[:, :-1], ev.plan.actions).sum(1)
        zero = torch.zeros_like(ev.plan.actions)
        model_states = [tasks.x0]
        for t in range(zero.shape[1]):
            model_states.append(system.dynamics(model_states[-1], zero[:, t]))
        learned_at_zero = -system.reward(torch.stack(model_states[:-1], 1), zero).sum(1)
    assert torch.allclose(ev.cost_planned, learned) and torch.allclose(ev.cost_achieved, true)
    assert torch.all(ev.cost_planned < learned_at_zero)  # the optimiser lowered the learned cost


def test_resume_from_last_checkpoint(trained_run, tmp_path):
    out, _ = trained_run
    cfg = compose_config(
        "train", [*TINY, "trainer.max_epochs=2", f"ckpt_path={out}/checkpoints/last.ckpt"], tmp_path
    )
    _, objects = train(cfg)
    first = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert objects["trainer"].current_epoch == 2
    assert objects["trainer"].global_step == 2 * first["global_step"]


def test_part_learning_rates_and_cosine_schedule(tmp_path):
    overrides = [*TINY, "model.lr_schedule=cosine", "+model.part_lr={dynamics: 0.01}", "trainer.max_epochs=2"]
    _, objects = train(compose_config("train", overrides, tmp_path / "run"))
    trainer, system = objects["trainer"], objects["system"]
    groups = trainer.optimizers[0].param_groups
    dynamics_params = {id(p) for p in system.dynamics.parameters()}
    (dynamics_group,) = [g for g in groups if {id(p) for p in g["params"]} == dynamics_params]
    assert dynamics_group["initial_lr"] == 0.01
    assert all(g["initial_lr"] == 1e-3 for g in groups if g is not dynamics_group)
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in groups)  # cosine reached its end
    # The saved hyperparameters are plain values, so the run resumes (weights-only unpickling).
    resumed = compose_config(
        "train", [*overrides[:-1], "trainer.max_epochs=3", f"ckpt_path={tmp_path}/run/checkpoints/last.ckpt"],
        tmp_path / "resumed",
    )  # fmt: skip
    trainer = train(resumed)[1]["trainer"]
    assert trainer.current_epoch == 3
    # The cosine spans the resumed run's 3 epochs (a restored 2-epoch curve would be back at half the lr).
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in trainer.optimizers[0].param_groups)
    # Bad values stop at construction (Hydra wraps the SGPError; the CLI prints it as one line).
    with pytest.raises(Exception, match="part_lr names unknown part 'dynamic'"):
        train(compose_config("train", [*TINY, "+model.part_lr={dynamic: 0.01}"], tmp_path / "bad"))
    with pytest.raises(Exception, match="part_lr.reward is set, but the reward part is not trained"):
        train(
            compose_config(
                "train", [*TINY, "model.reward=null", "+model.part_lr={reward: 0.01}"], tmp_path / "b"
            )
        )
    with pytest.raises(Exception, match="lr_schedule must be one of"):
        train(compose_config("train", [*TINY, "model.lr_schedule=linear"], tmp_path / "bad2"))


def test_checkpoint_of_another_domain_is_refused(trained_run, tmp_path):
    out, _ = trained_run
    ckpt = f"{out}/checkpoints/last.ckpt"
    with pytest.raises(SGPError, match="domain 'pit'"):
        plan(compose_config("plan", [f"ckpt_path={ckpt}", "expected_domain=hole"], tmp_path))
    with pytest.raises(SGPError, match="cannot resume"):
        train(compose_config("train", [*TINY, "domain=hole", f"ckpt_path={ckpt}"], tmp_path))
    with pytest.raises(SGPError, match="frozen score comes from a 'pit' checkpoint"):
        train(compose_config("train", [*TINY, "domain=hole", f"+model.frozen.score={ckpt}"], tmp_path))
    with pytest.raises(SGPError, match="another noise schedule|σ levels"):
        train(
            compose_config("train", [*TINY, "domain.sigma_max=0.7", f"+model.frozen.score={ckpt}"], tmp_path)
        )


def test_frozen_part_is_loaded_and_not_trained(trained_run, tmp_path):
    out, _ = trained_run
    ckpt = f"{out}/checkpoints/last.ckpt"
    _, objects = train(compose_config("train", [*TINY, f"+model.frozen.score={ckpt}"], tmp_path))
    source = SGPSystem.load_from_checkpoint(ckpt).score.state_dict()
    trained = objects["system"].score.state_dict()
    assert all(torch.equal(source[k], trained[k]) for k in source)
    assert "val/score_loss" not in objects["trainer"].callback_metrics


def test_plan_fails_when_every_task_diverges(trained_run, tmp_path):
    """A diverging lr makes every plan non-finite: results.json lists the failed tasks and plan() stops
    with one clear error instead of reporting NaN means as results."""
    from tests.conftest import raises_user_error

    cfg = _plan_config(
        trained_run, tmp_path, "methods=[vanilla]", "planners.vanilla.optimizer.lr=1e20",
        "planners.vanilla.optimizer.iterations=5",
    )  # fmt: skip
    with raises_user_error(r"every task's plan became non-finite with \['vanilla'\]"):
        plan(cfg)
    failed = json.loads((tmp_path / "results.json").read_text())["methods"]["vanilla"]["failed_tasks"]
    assert [f["task"] for f in failed] == [0, 1, 2] and all(f["diverged_at"] >= 1 for f in failed)


def test_a_non_finite_training_loss_stops_the_run_with_one_clear_error(tmp_path):
    from tests.conftest import TINY, raises_user_error

    cfg = compose_config("train", [*TINY, "model.optimizer.lr=1e12"], tmp_path)
    with raises_user_error("the training loss became non-finite in epoch 0"):
        train(cfg)


def test_training_losses_reach_the_loggers_and_the_epoch_end_check(tmp_path):
    """training_step logs on the steps the loggers write (every log_every_n_steps) and on each epoch's last
    step: the loggers get each such step's own losses, and at on_train_epoch_end callback_metrics hold the
    epoch's last losses (what the non-finite check reads)."""
    import lightning as L
    from lightning.pytorch.loggers.logger import Logger

    from sgp_lightning.train import instantiate_env_and_data, instantiate_system

    class Recorder(Logger, L.Callback):
        name, version = "record", 0

        def __init__(self):
            super().__init__()
            self.logged, self.losses, self.at_epoch_end = [], [], []

        def log_metrics(self, metrics, step=None):
            self.logged.append((step, dict(metrics)))

        def log_hyperparams(self, *args, **kwargs):
            pass

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(outputs["loss"].item())

        def on_train_epoch_end(self, trainer, pl_module):
            metrics = trainer.callback_metrics
            parts = {f"train/{name}_loss" for name in pl_module.trainable_parts}
            self.at_epoch_end.append((metrics["train/loss"].item(), parts <= set(metrics)))

    cfg = compose_config("train", list(TINY), tmp_path)
    env, datamodule = instantiate_env_and_data(cfg)
    system, recorder = instantiate_system(cfg, env), Recorder()
    trainer = L.Trainer(
        max_epochs=2, log_every_n_steps=4, logger=recorder, callbacks=[recorder], limit_val_batches=0,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(system, datamodule=datamodule)
    per_epoch = trainer.num_training_batches  # 6 (1350 rows in batches of 256)
    steps = [(step, m["train/loss"]) for step, m in recorder.logged if "train/loss" in m]
    assert [step for step, _ in steps] == [3, 7, 11]  # Lightning's logging steps (0-based)
    assert all(value == pytest.approx(recorder.losses[step]) for step, value in steps)
    assert all(
        {"train/dynamics_loss", "train/reward_loss", "train/score_loss"} <= set(m)
        for _, m in recorder.logged
        if "train/loss" in m
    )
    assert recorder.at_epoch_end == [
        (pytest.approx(recorder.losses[per_epoch - 1]), True),
        (pytest.approx(recorder.losses[2 * per_epoch - 1]), True),
    ]
