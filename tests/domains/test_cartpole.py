"""Cart-pole swing-up (paper C.1): dynamics against independent checks, the data box, the distance
estimator's targets, the new penalty and metrics, and a tiny run through train() + plan()."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from datamodules import CartPoleDataModule
from sgp_lightning.distance import softmin
from sgp_lightning.envs import CartPoleEnv
from sgp_lightning.errors import SGPError
from sgp_lightning.models import DistanceEstimator, SGPSystem
from sgp_lightning.plan import plan
from sgp_lightning.planning import (
    CEMPlanner,
    DistancePenalty,
    EnsemblePenalty,
    GradientPlanner,
    ShootingProblem,
)
from sgp_lightning.train import train
from tests.conftest import CONF, ONE_EPOCH, compose_config, hydra_conf, hydra_list, raises_user_error


def test_linearisation_at_the_upright_matches_the_hand_derived_one():
    # θ = π + φ, small φ: ẍ = (f + m_p g φ) / m_c,  θ̈ = (f + (m_c + m_p) g φ) / (l m_c).
    env = CartPoleEnv()
    mc, mp, length, g = 10.0, 1.0, 0.5, 9.81
    upright = torch.tensor([0.0, math.pi, 0.0, 0.0])
    a, b = torch.autograd.functional.jacobian(env.derivatives, (upright, torch.zeros(1)))
    expected_a = torch.tensor(
        [[0, 0, 1, 0], [0, 0, 0, 1], [0, mp * g / mc, 0, 0], [0, (mc + mp) * g / (length * mc), 0, 0]]
    )
    expected_b = torch.tensor([[0.0], [0.0], [1 / mc], [1 / (length * mc)]])
    assert torch.allclose(a, expected_a, atol=1e-5)
    assert torch.allclose(b, expected_b, atol=1e-6)
    assert torch.allclose(env.derivatives(upright, torch.zeros(1)), torch.zeros(4), atol=1e-5)


def _energy_drift(env: CartPoleEnv, x: torch.Tensor, steps: int) -> torch.Tensor:
    states = env.rollout(x, torch.zeros(x.shape[0], steps, 1, dtype=x.dtype))
    energy = env.energy(states)  # (B, T+1)
    scale = env.energy(x).abs() + env.pole_mass * env.gravity * env.pole_length
    return ((energy - energy[:, :1]).abs().max(1).values / scale).max()


def test_energy_is_nearly_conserved_without_input_with_second_order_error():
    generator = torch.Generator().manual_seed(0)
    x = CartPoleEnv().sample_states(64, generator).double()
    x[:, 2:] *= 0.3  # moderate speeds
    drift = _energy_drift(CartPoleEnv(), x, 10)  # 0.5 s at dt = 0.05
    assert drift < 2e-2
    # The midpoint rule's error is O(dt²): a 4× smaller step over the same 0.5 s drifts ≥ 8× less.
    assert _energy_drift(CartPoleEnv(dt=0.0125), x, 40) < drift / 8
    # With a force the energy changes, so the check can fail.
    pushed = CartPoleEnv().rollout(x, torch.full((64, 10, 1), 50.0, dtype=torch.float64))
    energy = CartPoleEnv().energy
    assert ((energy(pushed[:, -1]) - energy(x)).abs() / (energy(x).abs() + 4.9)).max() > 1e-1


def test_force_saturates_at_the_actuator_limit_and_the_cost_is_terminal_only():
    env = CartPoleEnv()
    x = env.tasks().x0
    assert torch.equal(
        env.step(x, torch.full((len(x), 1), 500.0)), env.step(x, torch.full((len(x), 1), 80.0))
    )
    unlimited = CartPoleEnv(force_limit=None)
    assert not torch.equal(
        unlimited.step(x, torch.full((len(x), 1), 500.0)), env.step(x, torch.full((len(x), 1), 80.0))
    )
    states = env.rollout(x, torch.zeros(len(x), 60, 1))
    cost = env.cost(states, torch.zeros(len(x), 60, 1), env.tasks().goal)
    expected = ((states[:, -1] - env.goal).square() * torch.tensor([1.0, 1.0, 0.1, 0.1])).sum(-1)
    assert torch.allclose(cost, expected)
    assert not env.success(states, env.tasks().goal).any()  # hanging down is not swung up
    tasks = env.tasks()
    assert len(tasks) == 8 and (tasks.x0[:, 2:] == 0).all() and (tasks.x0[:, 1].abs() <= 0.3).all()


def test_data_keeps_only_transitions_inside_the_box():
    env = CartPoleEnv()
    data = CartPoleDataModule(env, num_samples=5000, seed=3).load_transitions()
    assert data["x"].shape == (5000, 4) and data["u"].shape == (5000, 1)
    assert env.in_box(data["x"]).all() and env.in_box(data["x_next"]).all()
    assert (data["u"].abs() <= 80).all()
    assert torch.allclose(data["x_next"], env.step(data["x"], data["u"]))
    # Near the box's faces many transitions leave it, so the filter really removes some.
    x = env.sample_states(5000, torch.Generator().manual_seed(3))
    assert not env.in_box(env.step(x, env.sample_actions(5000, torch.Generator().manual_seed(4)))).all()
    # The planned-steps-outside metric counts states outside the box and forces beyond the data's range.
    states = torch.zeros(1, 3, 4)
    states[0, 2, 3] = 20.0  # θ̇ beyond 12
    actions = torch.tensor([[[10.0], [100.0]]])
    assert env.outside_data(states, actions).tolist() == [[False, True, True]]


def _fitted_estimator(reference_size=None):
    env = CartPoleEnv()
    module = CartPoleDataModule(env, num_samples=3000, batch_size=64, seed=0)
    module.setup()
    estimator = DistanceEstimator([4], [1], hidden_dims=[16], num_levels=4, reference_size=reference_size)
    estimator.set_normalizers(module.stats)
    estimator.set_reference(module.train_data)
    return estimator, module


def test_distance_targets_equal_the_exact_streamed_softmin():
    estimator, module = _fitted_estimator()
    reference = estimator.normalize_pair(module.train_data["x"], module.train_data["u"])
    assert torch.allclose(estimator.reference, reference)
    z = torch.randn(50, 5)
    level = torch.arange(50) % 4
    sigma = estimator.schedule.sigmas[level]
    target = estimator.exact(z, level)
    assert torch.allclose(target, softmin(z, reference, sigma).distance_sq, rtol=1e-4, atol=1e-4)
    brute = -sigma.square() * torch.logsumexp(
        -torch.cdist(z, reference).square() / (2 * sigma[:, None] ** 2), 1
    )
    assert torch.allclose(target, brute, rtol=1e-4, atol=1e-4)
    # A seeded subset of the reference set when asked for one.
    small, _ = _fitted_estimator(reference_size=100)
    assert small.reference.shape == (100, 5)
    # The predicted distance is σ² times the network's output, and the loss is eq. 43's scaled L1.
    assert estimator(z, level).shape == (50,)
    batch = {k: v[:64] for k, v in module.train_data.items()}
    loss = estimator.loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0
    rows = estimator.error_by_level(reference[:40], seed=1)
    assert [r["level"] for r in rows] == [0, 1, 2, 3]
    assert all(math.isfinite(r["abs_error_near"]) and math.isfinite(r["scaled_error_uniform"]) for r in rows)


def test_distance_estimator_trains_on_its_own_with_a_datamodule():
    import lightning as L

    module = CartPoleDataModule(CartPoleEnv(), num_samples=600, batch_size=64, seed=0)
    estimator = DistanceEstimator([4], [1], hidden_dims=[8], num_levels=2, reference_size=100)
    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(estimator, datamodule=module)  # setup gives it the stats and the reference set
    assert estimator.reference.shape == (100, 5)


def test_distance_estimator_without_reference_data_fails_clearly():
    estimator = DistanceEstimator([4], [1], hidden_dims=[8], num_levels=2)
    batch = {"x": torch.zeros(4, 4), "u": torch.zeros(4, 1)}
    with pytest.raises(SGPError, match="no reference data"):
        estimator.loss(batch)


def test_distance_penalty_has_a_value_cem_can_use():
    estimator, _ = _fitted_estimator()
    penalty = DistancePenalty(estimator, beta=2.0)
    assert penalty.level == 3 and not penalty.gradient_only
    states, actions = torch.zeros(3, 5, 4), torch.zeros(3, 4, 1)
    expected = 2.0 * estimator(estimator.normalize_pair(states[:, :-1], actions), 3).sum(1)
    assert torch.allclose(penalty(states[:, :-1], actions, None), expected)
    with pytest.raises(SGPError, match="DistancePenalty level must be in"):
        DistancePenalty(estimator, beta=1.0, level=7)
    env = CartPoleEnv(horizon=4)
    problem = ShootingProblem(env.step, env.cost, penalty, 4, env.neutral_action())
    tasks = env.tasks()
    result = CEMPlanner(optimizer={"iterations": 2, "population": 4, "elites": 2, "std": 5.0}).solve(
        problem, tasks.x0, tasks.goal
    )
    assert result.actions.shape == (8, 4, 1)
    system = SGPSystem("cartpole", [4], [1], {}, dynamics={"hidden_dims": [8]})
    with pytest.raises(SGPError, match="needs the system's distance model, but model.distance is null"):
        CEMPlanner(beta=1.0, penalty=DistancePenalty).check(system)


TINY_CARTPOLE = [
    "experiment=cartpole_small",
    "domain.datamodule.num_samples=2000",
    "domain.datamodule.batch_size=256",
    "domain.env.num_tasks=5",
    "domain.env.horizon=6",
    "model.score.hidden_dims=[32,32]",
    "model.distance.hidden_dims=[16,16]",
    "model.distance.reference_size=500",
    "model.ensemble.num_members=2",
    "planner.optimizer.iterations=4",
    *ONE_EPOCH,
]


def test_tiny_cartpole_run_trains_and_plans_every_method(tmp_path):
    cfg = compose_config("train", TINY_CARTPOLE, tmp_path / "run")
    metrics, _ = train(cfg)
    assert {"val/distance_loss", "val/ensemble_loss", "val/score_loss", "plan/cost_achieved"} <= set(metrics)
    methods = ["sgp", "vanilla", "ensemble", "cem_ensemble", "cem_distance", "sgp_ensemble"]
    plan_cfg = compose_config(
        "plan",
        [
            f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
            "planner_set=cartpole_small",
            f"methods=[{','.join(methods)}]",
            "track_true_cost_every=2",
            *[f"planners.{m}.optimizer.iterations=5" for m in methods],
        ],
        tmp_path / "plan",
    )
    payload = plan(plan_cfg)
    assert list(payload["methods"]) == methods
    for name, result in payload["methods"].items():
        assert 0.0 <= result["success_rate"] <= 1.0 and 0.0 <= result["outside_data"] <= 1.0, name
        curve = result["convergence"]
        assert curve["iteration"] == [0, 2, 4, 5]
        # The last point is the returned plan, whose true cost is the achieved cost.
        assert curve["true_cost"][-1] == pytest.approx(result["cost_achieved"], rel=1e-5)
    saved = json.loads((tmp_path / "plan" / "results.json").read_text())
    assert saved["methods"]["cem_distance"]["planner"]["penalty"]["_target_"].endswith("DistancePenalty")
    assert (tmp_path / "plan" / "convergence.png").is_file() and (tmp_path / "plan" / "plan.png").is_file()

    # sgp_ensemble plans through the ensemble's mean: its planned states are that model's rollout.
    system = SGPSystem.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    env, tasks = system.make_env(), system.make_env().tasks()
    actions = torch.randn(5, 6, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for source, step in (("ensemble_mean", system.ensemble.mean_prediction), ("model", system.dynamics)):
            states = GradientPlanner(dynamics=source).problem(system, env, 6).rollout(tasks.x0, actions)
            expected = [tasks.x0]
            for t in range(6):
                expected.append(step(expected[-1], actions[:, t]))
            assert torch.allclose(states, torch.stack(expected, 1)), source
    assert not torch.allclose(system.ensemble.mean_prediction(tasks.x0, actions[:, 0]),
                              system.dynamics(tasks.x0, actions[:, 0]))  # fmt: skip
    with pytest.raises(SGPError, match="planner.dynamics must be one of"):
        GradientPlanner(dynamics="ensemble")
    with pytest.raises(SGPError, match="always rolls out the ensemble's mean"):
        GradientPlanner(penalty=EnsemblePenalty, beta=1.0, dynamics="model")

    # task_seed= draws a fresh set of start states (to check settings tuned on the default set).
    with open_dict(plan_cfg):
        plan_cfg.methods, plan_cfg.task_seed = ["vanilla"], 1
    fresh = plan(plan_cfg)["methods"]["vanilla"]["per_task"]
    default = payload["methods"]["vanilla"]["per_task"]
    assert [t["cost_achieved"] for t in fresh] != [t["cost_achieved"] for t in default]


def test_reproduce_cartpole_reports_convergence_and_distance_errors(tmp_path):
    entry = OmegaConf.load(CONF / "reproduce" / "cartpole_small.yaml")
    methods = ["sgp", "vanilla", "ensemble", "cem_ensemble", "cem_distance", "sgp_ensemble"]
    assert list(entry.methods) == methods
    from sgp_lightning.reproduce import reproduce

    shrink = [f"planners.{m}.optimizer.iterations=4" for m in methods]
    cfg = compose_config(
        "reproduce",
        [
            "reproduce=cartpole_small",
            f"reproduce.train_overrides={hydra_list(TINY_CARTPOLE)}",
            f"reproduce.plan_overrides={hydra_list(['planner_set=cartpole_small', 'track_true_cost_every=2', *shrink])}",
            "reproduce.seeds=[0]",
            "reproduce.convergence_threshold=1e9",  # reached at the first record
        ],
        tmp_path,
    )
    with hydra_conf():  # reproduce composes the train and plan configs itself, as reproduce.py does
        reproduce(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["methods"]) == methods
    assert all(m["iterations_to_threshold"] == 0 for m in results["methods"].values())
    rows = results["distance_estimator"]
    assert [r["level"] for r in rows] == list(range(10))
    assert all(math.isfinite(r["abs_error_near"]) and r["abs_error_uniform"] >= 0 for r in rows)
    table = (tmp_path / "table.md").read_text()
    assert "| cem_distance |" in table and "success rate" in table and "Data-distance estimator" in table
    assert (tmp_path / "convergence.png").is_file() and (tmp_path / "plan.png").is_file()
    # β was chosen per method on the tuning task set, and the table planned with the choice.
    tuned = results["tuning"]["per_seed"]["0"]
    assert set(tuned) == {"sgp", "ensemble", "cem_ensemble", "cem_distance", "sgp_ensemble"}
    planned = json.loads((tmp_path / "runs" / "seed_0" / "plan" / "methods" / "results.json").read_text())
    for name, choice in tuned.items():
        assert list(choice["achieved_by_beta"]) == [f"{b:g}" for b in entry.tune.betas[name]]  # its own grid
        assert choice["achieved_by_beta"][f"{choice['beta']:g}"] == min(choice["achieved_by_beta"].values())
        assert planned["methods"][name]["planner"]["beta"] == choice["beta"]
    assert "chosen per seed on a separate task set (task_seed=1)" in table
    assert results["methods"]["sgp"]["per_seed"][0]["planner"]["beta"] == tuned["sgp"]["beta"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("reproduce.tune.methods=[vanilla]", "vanilla has no penalty weight to tune"),
        ("reproduce.tune.methods=[bc]", r"\['bc'\] are not in reproduce.methods"),
        ("reproduce.tune.betas.sgp=[]", "reproduce.tune.betas is empty for sgp"),
        (
            ["~reproduce.tune.betas", "+reproduce.tune.betas=[]"],
            "reproduce.tune.betas is empty for sgp",
        ),  # shared
        ("~reproduce.tune.betas.ensemble", r"reproduce.tune.betas has no grid for \['ensemble'\]"),
        ("+reproduce.tune.betas.sgp_typo=[1.0]", r"has grids for \['sgp_typo'\], which are not planners"),
        ("reproduce.tune.betas.sgp=1.0", "reproduce.tune.betas for sgp must be a list, got 1.0"),
        ("reproduce.tune.betas.sgp=[1,1.0]", r"reproduce.tune.betas for sgp repeats a value: \['1', '1'\]"),
        ("reproduce.tune.betas.sgp=[-1]", r"must be finite numbers ≥ 0, got \[-1\] for sgp"),
        # a narrowed table keeps working: grids of untuned methods are unused
        (
            [
                "reproduce.methods=[sgp,vanilla]",
                "reproduce.tune.methods=[sgp]",
                "reproduce.tune.betas.sgp=[]",
            ],
            "reproduce.tune.betas is empty for sgp",
        ),  # fmt: skip
        ("reproduce.beta_sweep=[1.0]", "tune and reproduce.beta_sweep cannot be combined"),
    ],
)
def test_reproduce_tuning_errors_stop_before_training(tmp_path, override, message):
    from sgp_lightning.reproduce import reproduce

    overrides = override if isinstance(override, list) else [override]
    cfg = compose_config("reproduce", ["reproduce=cartpole_small", *overrides], tmp_path)
    with hydra_conf(), raises_user_error(message):  # reproduce composes the train and plan configs itself
        reproduce(cfg)
    assert not (tmp_path / "runs").exists()  # nothing was trained
