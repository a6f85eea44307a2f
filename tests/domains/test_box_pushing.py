"""Box pushing with marker states (paper C.4): the MuJoCo env, the demonstrations and their log format, the
known pusher dynamics, data stabilisation, and a tiny run through train() + plan()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from datamodules import BoxPushingDataModule
from sgp_lightning.analysis.box_pushing import stabilise
from sgp_lightning.data.box_pushing import demonstrate, load_log, main, save_log
from sgp_lightning.envs import BoxPushingEnv
from sgp_lightning.errors import SGPError
from sgp_lightning.models import DynamicsModel, ScoreModel, SGPSystem
from sgp_lightning.plan import plan
from sgp_lightning.train import train
from tests.conftest import compose_config, hydra_conf, hydra_list


@pytest.fixture(scope="module")
def env():
    return BoxPushingEnv()


@pytest.fixture(scope="module")
def demos(env):
    return demonstrate(env, num_demos=100, max_steps=10, seed=0)


def test_pose_and_markers_round_trip(env):
    pose = torch.tensor([[0.0, 0.0, 0.0], [12.5, -3.0, 0.7], [-4.0, 8.0, -2.5]])
    markers = env.markers_of(pose)
    assert markers.shape == (3, 5, 2)
    assert torch.allclose(env.pose_of(markers), pose, atol=1e-5)
    # marker 0 sits at (6, 4) in the box frame: rotated by θ and shifted
    cos, sin = math.cos(0.7), math.sin(0.7)
    assert torch.allclose(
        markers[1, 0], torch.tensor([12.5 + 6 * cos - 4 * sin, -3.0 + 6 * sin + 4 * cos]), atol=1e-5
    )
    assert torch.allclose(env.rigidity_error(env.state_of(pose, pose[:, :2])), torch.zeros(3), atol=1e-5)


def test_simulated_box_stays_rigid_and_moves_only_when_pushed(env):
    generator = torch.Generator().manual_seed(1)
    x = env.sample_starts(8, generator)
    for _ in range(4):
        u = (torch.rand(8, 2, generator=generator) * 2 - 1) * 4.0 + torch.tensor([3.0, 0.0])
        x_next = env.step(x, u)
        assert torch.allclose(x_next[:, 10:], x[:, 10:] + u)  # the pusher goes where it is commanded
        x = x_next
    assert float(env.rigidity_error(x).max()) < 1e-3  # marker distances stay the box's
    moved = env.pose_of(env.split(x)[0]) - env.pose_of(
        env.split(env.sample_starts(8, torch.Generator().manual_seed(1)))[0]
    )
    assert float(moved[:, :2].norm(dim=-1).max()) > 1.0  # the pushes moved the boxes
    # Quasi-static: a pusher moving away from the box leaves it where it is.
    away = env.step(x, torch.tensor([[-3.0, 0.0]]).expand(8, 2))
    assert torch.allclose(away[:, :10], x[:, :10], atol=1e-4)


def test_pushing_through_the_centre_translates_the_box(env):
    x0 = env.state_of(torch.zeros(1, 3), torch.tensor([[-9.2, 0.0]]))  # pusher touching the back face
    pose = env.pose_of(env.split(env.step(x0, torch.tensor([[4.0, 0.0]])))[0])
    assert (
        pose[0, 0] == pytest.approx(3.8, abs=0.3)
        and abs(float(pose[0, 1])) < 1e-3
        and abs(float(pose[0, 2])) < 1e-3
    )


def test_marker_noise_is_seeded_and_keeps_the_pusher_exact():
    noisy = [BoxPushingEnv(marker_noise=0.1, noise_seed=3) for _ in range(2)]
    x = noisy[0].sample_starts(4, torch.Generator().manual_seed(0))
    u = torch.full((4, 2), 1.0)
    a, b = noisy[0].step(x, u), noisy[1].step(x, u)
    assert torch.equal(a, b) and float(noisy[0].rigidity_error(a).mean()) > 0.01
    noisy[0].reset_noise()
    assert torch.equal(noisy[0].step(x, u), a)  # the same noise again after a reset
    assert torch.allclose(a[:, 10:], x[:, 10:] + u)


def test_cost_is_eq_47_and_tasks_cover_every_goal(env):
    tasks = env.tasks()
    assert len(tasks) == 30 and env.task_goals()[9:11] == ["left", "center"]
    assert torch.allclose(tasks.goal[0, :10], env.markers_of(env.goal_poses[0]).flatten())
    states = torch.stack([tasks.x0, tasks.goal], 1)  # T = 1: one step straight onto the goal
    actions = torch.full((30, 1, 2), 2.0)
    assert torch.allclose(env.cost(states, actions, tasks.goal), torch.full((30,), 0.1 * 8.0))
    assert env.success(states, tasks.goal).all()
    assert torch.allclose(
        env.terminal_cost(tasks.x0, tasks.goal), (tasks.x0 - tasks.goal)[:, :10].square().sum(-1)
    )


def test_task_starts_are_not_the_demonstrations_starts(env, demos):
    starts = demos["x"][torch.cat([torch.tensor([True]), demos["episode"][1:] != demos["episode"][:-1]])]
    distance = torch.cdist(env.tasks().x0, starts)
    assert float(distance.min()) > 1e-3


def test_num_tasks_sets_the_trials_per_goal():
    env = BoxPushingEnv()
    env.num_tasks = 6
    assert env.trials_per_goal == 2 and len(env.tasks()) == 6
    with pytest.raises(SGPError, match="multiple of the 3 goals"):
        env.num_tasks = 7


def test_bad_env_settings_fail_clearly():
    with pytest.raises(SGPError, match="markers must be 5"):
        BoxPushingEnv(markers=[[0.0, 0.0]] * 4)
    with pytest.raises(SGPError, match="collinear"):
        BoxPushingEnv(markers=[[float(i), 0.0] for i in range(-2, 3)])
    with pytest.raises(SGPError, match="must lie on the box"):
        BoxPushingEnv(markers=[[20.0, 0.0], [0, 1], [1, 0], [2, 2], [-1, -1]])


def test_demonstrations_have_the_papers_size_and_the_log_format(env, demos, tmp_path):
    n = len(demos["x"])
    assert 650 <= n <= 850  # paper C.4: about 100 demonstrations, 750 transitions
    assert demos["x"].shape == (n, 12) and demos["u"].shape == (n, 2) and demos["x_next"].shape == (n, 12)
    assert demos["episode"].unique().numel() == 100
    assert bool((demos["episode"][1:] >= demos["episode"][:-1]).all())  # each demonstration's rows together
    assert float(demos["u"].norm(dim=-1).max()) <= 5.0 + 1e-5
    assert torch.allclose(demos["x_next"][:, 10:], demos["x"][:, 10:] + demos["u"], atol=1e-5)
    # the demonstrations move the boxes forward, towards x = 18 … 32
    last = torch.cat([demos["episode"][1:] != demos["episode"][:-1], torch.tensor([True])])
    assert float(env.pose_of(env.split(demos["x_next"][last])[0])[:, 0].mean()) > 15
    path = save_log(tmp_path / "demos.npz", demos)
    loaded = load_log(path)
    for key in ("x", "u", "x_next", "episode"):
        assert torch.equal(loaded[key], demos[key])
    module = BoxPushingDataModule(env, log=str(path), batch_size=32, seed=0)
    module.setup()
    assert len(module.train_data["x"]) + len(module.val_data["x"]) == n
    assert torch.allclose(module.all_data["r"], -0.1 * module.all_data["u"].square().sum(-1))


def test_demonstration_command_writes_a_log(tmp_path, capsys):
    assert main([f"output={tmp_path / 'd.npz'}", "num_demos=5", "max_steps=3", "seed=2"]) == 0
    assert '"demonstrations": 5' in capsys.readouterr().out
    assert len(load_log(tmp_path / "d.npz")["x"]) <= 15
    with pytest.raises(SystemExit) as exit_info:
        main([f"output={tmp_path / 'e.npz'}", "num_demo=5"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("x_next"), r"missing \['x_next'\]"),
        (lambda a: a.update(u=a["u"][:, :1]), "u must have shape"),
        (lambda a: a.update(x=a["x"][:-1]), "different numbers of rows"),
        (lambda a: a.update(x=a["x"][:, :10]), "x must have shape"),
        (
            lambda a: a.update(x=a["x"][:0], u=a["u"][:0], x_next=a["x_next"][:0], episode=a["episode"][:0]),
            "no rows",
        ),
        (lambda a: a["x"].__setitem__((3, 2), np.nan), "NaN or infinite values"),
        (lambda a: a.update(episode=a["episode"].astype(float)), "episode must be N integers"),
    ],
)
def test_malformed_logs_fail_with_a_clear_message(demos, tmp_path, change, message):
    arrays = {k: v.numpy().copy() for k, v in demos.items()}
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SGPError, match=message):
        load_log(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(x=a["x"] / 100, x_next=a["x_next"] / 100), "marker distances"),  # metres
        (lambda a: a.update(x=a["x"][:, [2, 3, 0, 1, *range(4, 12)]]), "marker distances"),  # marker order
        (lambda a: a.update(u=a["u"] * 2), "pusher moved"),
    ],
)
def test_logs_of_another_box_or_pusher_fail_clearly(env, demos, tmp_path, change, message):
    arrays = {k: v.numpy().copy() for k, v in demos.items()}
    change(arrays)
    np.savez(tmp_path / "other.npz", **arrays)
    module = BoxPushingDataModule(env, log=str(tmp_path / "other.npz"), seed=0)
    with pytest.raises(SGPError, match=message):
        module.setup()


def test_unreadable_or_missing_logs_fail_clearly(tmp_path):
    (tmp_path / "not.npz").write_text("x,u\n1,2\n")
    with pytest.raises(SGPError, match="not a readable .npz"):
        load_log(tmp_path / "not.npz")
    with pytest.raises(SGPError, match="does not exist"):
        load_log(tmp_path / "missing.npz")


def test_known_increments_compute_the_pusher_and_learn_the_markers(demos):
    model = DynamicsModel([12], [2], hidden_dims=[16], known_increments=[[10, 0], [11, 1]])
    assert model.output_shape == (10,) and model.net(torch.zeros(1, 14)).shape == (1, 10)
    x, u = demos["x"][:6], demos["u"][:6]
    x_next = model(x, u)
    assert torch.equal(x_next[:, 10:], x[:, 10:] + u)
    batch = {"x": x, "u": u, "x_next": demos["x_next"][:6]}
    assert model.target(batch).shape == (6, 10)
    # gradients reach the actions through the known part too
    actions = u.clone().requires_grad_(True)
    model(x, actions)[:, 10:].sum().backward()
    assert torch.equal(actions.grad, torch.ones_like(u))
    # known coordinates anywhere: the learned ones land in their own places
    mixed = DynamicsModel([5], [2], hidden_dims=[8], residual=False, known_increments=[[0, 1], [3, 0]])
    x5, u2 = torch.randn(4, 5), torch.randn(4, 2)
    learned = mixed.target_norm.denormalize(mixed.predict_normalized(x5, u2))
    out = mixed(x5, u2)
    assert torch.equal(out[:, 0], x5[:, 0] + u2[:, 1]) and torch.equal(out[:, 3], x5[:, 3] + u2[:, 0])
    assert torch.equal(out[:, [1, 2, 4]], learned)
    for bad in ([[12, 0]], [[10, 2]], [[10, 0], [10, 1]]):
        with pytest.raises(SGPError, match="known_increments"):
            DynamicsModel([12], [2], hidden_dims=[16], known_increments=bad)


def test_data_stabilisation_reduces_the_constraint_error_on_a_small_trained_score(env):
    import lightning as L

    torch.manual_seed(0)
    module = BoxPushingDataModule(env, num_demos=100, batch_size=64, seed=0)
    score = ScoreModel(
        [12], [2], hidden_dims=[128, 128, 128], schedule="cosine", sigma_max=0.2, sigma_min=0.01
    )
    trainer = L.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)  # fmt: skip
    trainer.fit(score, datamodule=module)
    val = module.val_data
    report = stabilise(score.eval(), env, val["x"], val["u"], perturbation=1.0, seed=0, steps_per_level=20,
                       step_size=0.5)["report"]  # fmt: skip
    assert report["after_learned"]["mean"] < 0.6 * report["before"]["mean"], report


def test_tiny_box_pushing_run_trains_and_plans_with_mpc(tmp_path):
    overrides = [
        "experiment=box_pushing",
        "domain.datamodule.num_demos=20",
        "domain.env.trials_per_goal=1",
        "domain.env.horizon=3",
        "model.dynamics.hidden_dims=[32,32]",
        "model.score.hidden_dims=[32,32]",
        "planner.optimizer.iterations=3",
        "planner.mpc.iterations=2",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    metrics, objects = train(compose_config("train", overrides, tmp_path / "run"))
    assert {"val/dynamics_loss", "val/score_loss", "plan/cost_achieved"} <= set(metrics)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    system = SGPSystem.load_from_checkpoint(ckpt)
    assert system.dynamics.known_state == [10, 11] and system.domain == "box_pushing"
    x, u = system.make_env().tasks().x0[:3], torch.randn(3, 2)
    with torch.no_grad():  # the reloaded model predicts what the trained one did
        assert torch.allclose(system.dynamics(x, u), objects["system"].dynamics.cpu().eval()(x, u), atol=1e-6)
    plan_cfg = compose_config(
        "plan",
        [f"ckpt_path={ckpt}", "planner_set=box_pushing", "mpc=true", "methods=[sgp,vanilla]",
         "planners.sgp.mpc.iterations=2", "planners.vanilla.mpc.iterations=2",
         "planners.sgp.optimizer.iterations=2", "planners.vanilla.optimizer.iterations=2"],
        tmp_path / "plan",
    )  # fmt: skip
    payload = plan(plan_cfg)
    assert payload["mpc"] and payload["num_tasks"] == 3
    for result in payload["methods"].values():
        assert math.isfinite(result["cost_achieved"]) and 0.0 <= result["success_rate"] <= 1.0
    assert (tmp_path / "plan" / "plan.png").is_file()


def test_reproduce_box_pushing_runs_shrunken_per_seed_and_resumes(tmp_path):
    from sgp_lightning.reproduce import reproduce

    cfg = compose_config(
        "reproduce",
        [
            "reproduce=box_pushing", "reproduce.seeds=[0,1]", "reproduce.steps_per_level=2",
            "reproduce.beta_sweep=[1,10]", "reproduce.tuning_trials_per_goal=2", "progress=false",
            "reproduce.train_overrides=" + hydra_list([
                "experiment=box_pushing", "domain.datamodule.num_demos=20", "domain.env.trials_per_goal=2",
                "domain.env.horizon=2", "model.dynamics.hidden_dims=[32]", "model.score.hidden_dims=[32]",
                "trainer.max_epochs=1", "callbacks.planning=null",
            ]),
            "reproduce.plan_overrides=" + hydra_list([
                "planner_set=box_pushing", "planners.sgp.mpc.iterations=2", "planners.vanilla.mpc.iterations=2",
                "planners.sgp.optimizer.iterations=2", "planners.vanilla.optimizer.iterations=2",
            ]),
        ],
        tmp_path,
    )  # fmt: skip
    with hydra_conf():
        payload = reproduce(cfg)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(payload))
    assert payload["seeds"] == [0, 1] and set(payload["per_seed"]) == {"0", "1"}
    tuning = payload["tuning"]  # β chosen per seed on the tuning task set, then used for that seed's table
    assert tuning["task_seed"] == 1 and set(tuning["per_seed"]) == {"0", "1"}
    for seed, sweep in tuning["per_seed"].items():
        rows = sweep["rows"]
        assert [row["beta"] for row in rows] == [0, 1, 10]
        for row in rows:
            costs = torch.tensor(row["cost_achieved_per_trial"], dtype=torch.float64)
            assert len(costs) == 3 * 2  # 2 tuning trials per goal
            assert row["cost_achieved"] == pytest.approx(float(costs.mean()))
            assert row["standard_error"] == pytest.approx(float(costs.std() / math.sqrt(6)))
        assert sweep["chosen_beta"] == min(rows[1:], key=lambda row: row["cost_achieved"])["beta"]
        assert sum(row["chosen_share"] for row in rows[1:]) == pytest.approx(1.0)
        assert payload["per_seed"][seed]["methods"]["sgp"]["planner"]["beta"] == sweep["chosen_beta"]
        chosen = next(row for row in rows if row["beta"] == sweep["chosen_beta"])
        assert sweep["chosen_minus_vanilla"]["mean"] == pytest.approx(
            chosen["cost_achieved"] - rows[0]["cost_achieved"]
        )
    for run in payload["per_seed"].values():
        methods = run["methods"]
        # SGP − vanilla paired over the same tasks: its mean is the means' difference (float32 means of ~1e3)
        assert run["sgp_minus_vanilla"]["mean"] == pytest.approx(
            methods["sgp"]["cost_achieved"] - methods["vanilla"]["cost_achieved"], abs=1e-3
        )
        stab = run["stabilisation"]
        assert stab["after_exact"]["mean"] < 1e-3 < stab["before"]["mean"]  # the oracle lands on rigid data
        for method in run["methods"].values():
            assert set(method["per_goal"]) == {"left", "center", "right"} and "true_states" not in method
            assert len(method["model_rigidity_error_per_step"]) == 3  # t = 0 … T
            assert method["model_rigidity_error_per_step"][0] < 1e-4  # the start state is a true, rigid one
    for name, over in payload["mean_over_seeds"].items():  # the mean over seeds of each seed's mean
        per_seed = [run["methods"][name]["cost_achieved"] for run in payload["per_seed"].values()]
        assert over["all"]["mean"] == pytest.approx(sum(per_seed) / 2)
    table = (tmp_path / "table.md").read_text()
    assert "seed 0: SGP" in table and "seed 1: vanilla MBRL" in table and "mean over seeds: SGP" in table
    assert "| **all goals** |" in table and (tmp_path / "box_pushing.png").is_file()

    # A rerun reuses both trainings, every tuning plan and every table plan: nothing is written again.
    pieces = sorted(tmp_path.glob("runs/seed_*/**/results.json")) + sorted(
        tmp_path.glob("runs/seed_*/checkpoints/last.ckpt")
    )
    assert len(pieces) == 2 * (3 + 2 + 1)  # per seed: 3 tuning plans, 2 table plans, 1 training
    written = {p: p.stat().st_mtime_ns for p in pieces}
    with hydra_conf():
        again = reproduce(cfg)
    assert {p: p.stat().st_mtime_ns for p in pieces} == written
    assert again["per_seed"] == payload["per_seed"] and again["tuning"] == tuning
