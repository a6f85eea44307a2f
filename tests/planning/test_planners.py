"""Planner internals: the B.1 surrogate's gradient, β handling, batching, frozen networks, the Controller's
MPC, the pit; planners built from conf/planner/ and checked against a system."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.distance import ExactScoreModel
from sgp_lightning.envs import IntegratorEnv
from sgp_lightning.models import DynamicsModel, ScoreModel
from sgp_lightning.planning import (
    CEMPlanner,
    Controller,
    EnsemblePenalty,
    GradientPlanner,
    NoPenalty,
    ScorePenalty,
    ShootingProblem,
    frozen,
    make_planner,
    parse_beta,
)
from sgp_lightning.schedules import NoiseSchedule


def _random_models(seed=0):
    torch.manual_seed(seed)
    dynamics = DynamicsModel(2, 2, hidden_dims=[16], activation="tanh")
    score = ScoreModel(2, 2, hidden_dims=[16], activation="tanh", sigma_max=1.0, sigma_min=0.1, num_levels=4)
    stats = {
        "x": (torch.tensor([0.1, -0.2]), torch.tensor([0.5, 2.0])),
        "u": (torch.zeros(2), torch.full((2,), 0.3)),
        "dx": (torch.zeros(2), torch.full((2,), 0.2)),
        "xu": (torch.tensor([0.1, -0.2, 0.0, 0.0]), torch.tensor([0.5, 2.0, 0.3, 0.3])),
    }
    dynamics.set_normalizers(stats)
    score.set_normalizers(stats)
    return dynamics, score


def test_surrogate_gradient_equals_explicit_chain_rule():
    """∇_u of −βσ² Σ_t ⟨stopgrad s(z_t), z_t⟩ equals −βσ² Σ_t J_tᵀ s(z_t), J_t = ∂z_t/∂u (eq. 12, B.1)."""
    dynamics, score = _random_models()
    beta, level, horizon = 0.7, 2, 4
    penalty = ScorePenalty(score, beta)
    problem = ShootingProblem(
        dynamics, lambda s, a, g: s.new_zeros(s.shape[0]), penalty, horizon, torch.zeros(2)
    )
    x0 = torch.tensor([[0.3, -0.4]])
    actions = torch.randn(1, horizon, 2, requires_grad=True)
    with frozen(dynamics, score):
        objective, _, _ = problem.objective(x0, None, actions, level)
        (surrogate_grad,) = torch.autograd.grad(objective.sum(), actions)

        def pairs(u):
            states = problem.rollout(x0, u.reshape(1, horizon, 2))
            return score.normalize_pair(states[:, :-1], u.reshape(1, horizon, 2)).reshape(-1)

        jac = torch.autograd.functional.jacobian(pairs, actions.detach().reshape(-1))  # (T·d, T·m)
        s = score(pairs(actions.detach().reshape(-1)).reshape(1, horizon, 4), level).reshape(-1)
    sigma = float(score.schedule.sigmas[level])
    explicit = -beta * sigma**2 * (jac.T @ s)
    assert torch.allclose(surrogate_grad.reshape(-1), explicit, rtol=1e-4, atol=1e-6)


def test_score_penalty_is_one_batched_call_over_the_horizon():
    dynamics, score = _random_models()
    calls = []
    original = score.net.forward
    score.net.forward = lambda z, level: calls.append(z.shape) or original(z, level)
    problem = ShootingProblem(
        dynamics, lambda s, a, g: s.new_zeros(s.shape[0]), ScorePenalty(score, 1.0), 6, torch.zeros(2)
    )
    with frozen(dynamics, score):
        problem.objective(torch.zeros(3, 2), None, torch.zeros(3, 6, 2), 0)
    assert calls == [torch.Size([3, 6, 4])]


@pytest.mark.parametrize("beta", [-1.0, -1e-9, "abc", float("nan")])
def test_bad_beta_is_rejected(beta):
    with pytest.raises(SGPError, match="beta"):
        parse_beta(beta)


def _system(score=None, ensemble=None, dynamics=None, reward=None):
    """The parts a planner reads from an SGPSystem."""
    return SimpleNamespace(
        score=score, ensemble=ensemble, dynamics=dynamics, reward=reward, policy=None, distance=None, parts={}
    )


def _adam(**settings) -> GradientPlanner:
    return GradientPlanner(optimizer=settings)


def test_beta_zero_is_vanilla_and_inf_drops_the_cost():
    _, score = _random_models()
    vanilla = GradientPlanner(beta=0, penalty=ScorePenalty)
    assert isinstance(vanilla.make_penalty(_system(score)), NoPenalty)
    for spelling in ("inf", ".inf", math.inf):
        assert parse_beta(spelling) == math.inf
    landing = GradientPlanner(beta="inf", penalty=ScorePenalty).make_penalty(_system(score))
    assert landing.drops_cost
    dynamics, _ = _random_models()
    x0, actions = torch.zeros(2, 2), torch.randn(2, 3, 2)

    def big_cost(states, actions, goal):
        return 1e6 * states.square().sum((-1, -2))

    problem = ShootingProblem(dynamics, big_cost, landing, 3, torch.zeros(2))
    with frozen(dynamics, score):
        objective, cost, _ = problem.objective(x0, None, actions, 0)
    assert torch.allclose(objective, landing(problem.rollout(x0, actions)[:, :-1], actions, 0))
    assert cost.abs().min() > 1  # the cost is still reported, just not optimised


def test_beta_positive_without_score_model_is_a_clear_error():
    dynamics, _ = _random_models()
    with pytest.raises(SGPError, match="planner sgp: ScorePenalty needs the system's score model"):
        GradientPlanner(name="sgp", beta=0.1, penalty=ScorePenalty).check(_system(None, dynamics=dynamics))


@pytest.mark.parametrize("horizon", [0, -3])
def test_nonpositive_horizon_is_rejected(horizon):
    with pytest.raises(SGPError, match="horizon"):
        ShootingProblem(lambda x, u: x + u, lambda s, a, g: s.sum(), NoPenalty(), horizon, torch.zeros(2))


def test_batch_planning_equals_planning_each_task_alone():
    dynamics, score = _random_models(1)
    env = IntegratorEnv(horizon=5, num_tasks=3)
    tasks = env.tasks()
    problem = ShootingProblem(dynamics, env.cost, ScorePenalty(score, 0.5), 5, torch.zeros(2))
    planner = _adam(iterations=25, lr=0.05)
    with frozen(dynamics, score):
        batch = planner.solve(problem, tasks.x0, tasks.goal)
        for i in range(3):
            alone = planner.solve(problem, tasks.x0[i : i + 1], tasks.goal[i : i + 1])
            assert torch.allclose(alone.actions, batch.actions[i : i + 1], atol=1e-5)


def test_planning_freezes_network_parameters_and_restores_them():
    dynamics, score = _random_models()
    dynamics.train()
    before = [p.detach().clone() for p in dynamics.parameters()]
    problem = ShootingProblem(dynamics, IntegratorEnv().cost, ScorePenalty(score, 1.0), 4, torch.zeros(2))
    tasks = IntegratorEnv(num_tasks=2).tasks()
    with frozen(dynamics, score):
        assert not any(p.requires_grad for p in dynamics.parameters())
        _adam(iterations=5).solve(problem, tasks.x0, tasks.goal)
    assert all(p.grad is None and p.requires_grad for p in dynamics.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, dynamics.parameters(), strict=True))
    assert dynamics.training


def _pit_setup():
    """True env with a pit; 'learned' model = the plain integrator (it never saw the pit); exact score of
    data drawn outside the pit. Isolates the planner from any training."""
    env = IntegratorEnv(name="pit", pit_radius=0.4, hole_radius=0.4, num_tasks=6)
    g = torch.Generator().manual_seed(0)
    x = env.sample_states(6000, g)
    x = x[~env.in_hole(x)][:3000]
    u = env.sample_actions(3000, g)
    schedule = NoiseSchedule.geometric(0.5, 0.2, 8)  # 4-D data this sparse is jagged below σ ≈ 0.2
    return env, ExactScoreModel(torch.cat([x, u], -1), schedule)


def _evaluate(env, problem, actions, tasks):
    true = env.rollout(tasks.x0, actions)
    return env.cost(true, actions, tasks.goal), true


def test_sgp_with_exact_score_goes_around_the_pit_and_vanilla_does_not():
    env, score = _pit_setup()
    tasks = env.tasks()
    planner = _adam(iterations=200, lr=0.01)
    results = {}
    for name, penalty in (("vanilla", NoPenalty()), ("sgp", ScorePenalty(score, 1.0))):
        problem = ShootingProblem(lambda x, u: x + u, env.cost, penalty, env.horizon, torch.zeros(2))
        plan = planner.solve(problem, tasks.x0, tasks.goal)
        achieved, true = _evaluate(env, problem, plan.actions, tasks)
        results[name] = (plan.cost_planned, achieved, env.in_pit(true).float().mean())
    assert results["vanilla"][2] > 0.2  # vanilla drives into the pit and stalls there
    assert results["sgp"][2] < 0.25 * results["vanilla"][2]  # at most grazes the rim
    # (Achieved cost is compared with trained models in reproduce.py pit: the exact score of a finite 4-D set
    # is jagged, and plans on it land on individual data points, Prop. 1.)
    gap = {k: (v[1] - v[0]).abs().mean() for k, v in results.items()}
    assert gap["sgp"] < 0.25 * gap["vanilla"]


class _ExactSystem(torch.nn.Module):
    """A 'trained' system whose dynamics model is the true integrator x' = x + u."""

    class _Integrator(torch.nn.Module):
        def forward(self, x, u):
            return x + u

    def __init__(self):
        super().__init__()
        self.dynamics = self._Integrator()
        self.score = self.ensemble = self.reward = self.policy = self.distance = None
        self.device = torch.device("cpu")


def test_controller_runs_mpc_on_the_true_env_with_warm_start():
    env = IntegratorEnv(horizon=6, num_tasks=2)
    tasks = env.tasks()
    planner = GradientPlanner(
        beta=0, optimizer={"iterations": 30, "lr": 0.05}, mpc={"horizon": 3, "iterations": 10}
    )
    result = Controller(_ExactSystem(), planner, env).run(env, tasks.x0, tasks.goal, 6)
    assert result.actions.shape == (2, 6, 2)
    # The model is exact here, so the model's prediction of the executed actions equals the truth.
    assert torch.allclose(result.states, result.history["true_states"], atol=1e-6)
    start = env.cost(env.rollout(tasks.x0, torch.zeros(2, 6, 2)), torch.zeros(2, 6, 2), tasks.goal)
    assert torch.all(result.cost_planned < start)


def test_controller_act_takes_numpy_or_torch_single_or_batched():
    env = IntegratorEnv(horizon=6, num_tasks=3)
    tasks = env.tasks()
    planner = GradientPlanner(
        beta=0, optimizer={"iterations": 20, "lr": 0.05}, mpc={"horizon": 3, "iterations": 5}
    )
    controller = Controller(_ExactSystem(), planner, env)
    batch = controller.act(tasks.x0, goal=tasks.goal)
    assert isinstance(batch, torch.Tensor) and batch.shape == (3, 2)
    controller.reset()
    single = controller.act(tasks.x0[0].numpy(), goal=tasks.goal[0].numpy())
    assert single.shape == (2,) and single.dtype == np.float32
    # Batched planning equals planning each observation alone (tasks are independent).
    assert np.allclose(single, batch[0].numpy(), atol=1e-5)
    # The next act is warm-started and runs mpc.iterations, not the planner's own.
    calls = []
    solve = controller.planner.solve
    controller.planner.solve = lambda *a, **k: calls.append(k["iterations"]) or solve(*a, **k)
    controller.act(tasks.x0[0].numpy(), goal=tasks.goal[0].numpy())
    assert calls == [5]
    with pytest.raises(SGPError, match="observations must have shape"):
        controller.act(np.zeros((2, 3)))


def test_grad_clip_is_per_task_and_must_be_positive():
    dynamics, score = _random_models(2)
    env = IntegratorEnv(horizon=4, num_tasks=3)
    tasks = env.tasks()
    problem = ShootingProblem(dynamics, env.cost, ScorePenalty(score, 5.0), 4, torch.zeros(2))
    planner = _adam(iterations=10, lr=0.05, grad_clip=1e-3)
    with frozen(dynamics, score):
        batch = planner.solve(problem, tasks.x0, tasks.goal)
        alone = planner.solve(problem, tasks.x0[:1], tasks.goal[:1])
    assert torch.allclose(alone.actions, batch.actions[:1], atol=1e-6)
    with pytest.raises(SGPError, match="grad_clip"):
        _adam(grad_clip=-1.0)


def test_penalty_none_with_positive_beta_is_refused():
    with pytest.raises(SGPError, match="silently ignore"):
        GradientPlanner(beta=0.5, penalty=None)


def test_cem_refuses_the_score_penalty():
    with pytest.raises(SGPError, match="cannot use the score penalty"):
        CEMPlanner(beta=1.0, penalty=ScorePenalty)
    CEMPlanner(beta=0.0, penalty=ScorePenalty)  # β = 0 plans without it


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"cost_source": "oracle"}, "cost_source"),
        ({"action_units": "cm"}, "action_units"),
        ({"dynamics": "truth"}, "dynamics"),
        ({"normalize_actions": "no"}, "normalize_actions"),
        ({"horizon": 0}, "horizon"),
        ({"mpc": {"horizon": -1}}, "mpc.horizon"),
        ({"mpc": {"window": 3}}, "unknown planner.mpc settings"),
        ({"optimizer": {"lr": 0}}, "lr must be positive"),
        ({"optimizer": {"momentum": 0.9}}, "unknown planner.optimizer settings"),
        ({"beta": -1}, "beta must be ≥ 0"),
        ({"penalty": EnsemblePenalty, "dynamics": "model"}, "always rolls out the ensemble's mean"),
    ],
)
def test_bad_planner_settings_fail_in_the_constructor(settings, match):
    with pytest.raises(SGPError, match=match):
        GradientPlanner(**settings)


def test_checks_against_the_system_name_the_missing_part():
    dynamics, score = _random_models()
    with pytest.raises(SGPError, match="planner p: planning needs the ensemble model"):
        GradientPlanner(name="p", dynamics="ensemble_mean").check(_system(score, dynamics=dynamics))
    with pytest.raises(SGPError, match="cost_source=learned needs a reward model"):
        GradientPlanner(cost_source="learned").check(_system(score, dynamics=dynamics))
    planner = GradientPlanner(beta=1.0, penalty=ScorePenalty, optimizer={"start_level": 4})
    with pytest.raises(SGPError, match=r"start_level must be in \[0, 3\]"):
        planner.check(_system(score, dynamics=dynamics))


def test_every_conf_planner_builds_from_its_config():
    """Each conf/planner/ entry instantiates with `_target_` to the planner class it names, and a bad value
    in a config is one clear error."""
    from sgp_lightning.planning.config import planner_config

    expected = {
        "sgp": (GradientPlanner, ScorePenalty, 1.0),
        "vanilla": (GradientPlanner, NoPenalty, 0.0),
        "data_landing": (GradientPlanner, ScorePenalty, math.inf),
        "ensemble": (GradientPlanner, EnsemblePenalty, 0.5),
        "sgp_ensemble": (GradientPlanner, ScorePenalty, 1.0),
        "cem": (CEMPlanner, EnsemblePenalty, 0.5),
    }
    for name, (cls, penalty, beta) in expected.items():
        planner = make_planner(planner_config(name))
        assert type(planner) is cls and planner.penalty_class is penalty and planner.beta == beta
    assert make_planner(planner_config("sgp_ensemble")).rollout_part == "ensemble"
    assert make_planner(planner_config("cem_distance")).optimizer.population == 10
    with pytest.raises(SGPError, match="planner sgp: planner.beta must be ≥ 0"):
        make_planner(planner_config("sgp", overrides={"beta": -1}))
    with pytest.raises(SGPError, match="needs a _target_"):
        make_planner({"beta": 1.0})


def test_a_task_whose_plan_becomes_non_finite_is_marked_failed_and_left_out_of_the_means():
    from sgp_lightning.planning import plan_and_evaluate

    env = IntegratorEnv(horizon=5, num_tasks=3)
    tasks = env.tasks()
    tasks.x0[1] = float("nan")  # a NaN from the model's input on: this task's objective is NaN at once
    planner = GradientPlanner(beta=0, optimizer={"iterations": 10, "lr": 0.05})
    evaluation = plan_and_evaluate(_ExactSystem(), env, tasks, planner)
    summary = evaluation.summary()
    assert evaluation.failed.tolist() == [False, True, False]
    assert summary["failed_tasks"] == [{"task": 1, "diverged_at": 0}]
    assert summary["per_task"][1]["failed"] and "failed" not in summary["per_task"][0]
    kept = evaluation.cost_achieved[[0, 2]].mean()
    assert math.isfinite(summary["cost_achieved"]) and summary["cost_achieved"] == pytest.approx(float(kept))
    from sgp_lightning.report import methods_table

    header, _, row = methods_table({"sgp": summary}).splitlines()
    assert header.endswith("| failed tasks |") and row.endswith("| 1 |")
