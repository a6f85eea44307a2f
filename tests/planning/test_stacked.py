"""Stacked solves: gradient planners that differ only in β (and the annealing start level) planned as one
batch of G groups of rows give each planner the plan it gets alone.

Why a tolerance and not bit equality: every row's arithmetic is its own (per-row penalty weights, per-task
gradient clipping, element-wise Adam), but matrix-multiply kernels choose their blocking by the number of
rows, so a row's dot products can be summed in another order in a bigger batch (last-bit differences,
≈ 1e-7 after 40 iterations here). Where the kernels happen to block both batches alike (e.g. 8 tasks of the
pit), the plans come out bit-identical; the tests below do not rely on it.
"""

import math

import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.envs import IntegratorEnv
from sgp_lightning.models import SGPSystem
from sgp_lightning.planning import (
    CEMPlanner,
    EnsemblePenalty,
    GradientPlanner,
    OpenLoopTasks,
    ScorePenalty,
    StackedGradientPlanner,
    frozen,
    stack_planners,
)
from tests.planning.test_planners import _random_models, _system

ATOL = 1e-5  # far below the differences between the β values' plans (asserted > 1e-3 below)
ADAM = {"iterations": 40, "lr": 0.05, "init_std": 0.1, "grad_clip": 1.0, "seed": 3}


def _grid():
    """vanilla (no penalty), SGP at β = 0 (its penalty unused), two finite β with different start levels
    and data landing (β = inf): every kind of row a stacked solve mixes."""
    return [
        GradientPlanner(name="vanilla", beta=0.0, optimizer=ADAM),
        GradientPlanner(name="sgp_0", beta=0.0, penalty=ScorePenalty, optimizer=ADAM),
        GradientPlanner(name="sgp_0.3", beta=0.3, penalty=ScorePenalty, optimizer=ADAM),
        GradientPlanner(name="sgp_3", beta=3.0, penalty=ScorePenalty, optimizer={**ADAM, "start_level": 2}),
        GradientPlanner(name="landing", beta="inf", penalty=ScorePenalty, optimizer=ADAM),
    ]


def test_stacked_grid_equals_separate_solves():
    dynamics, score = _random_models(1)
    system = _system(score, dynamics=dynamics)
    env = IntegratorEnv(horizon=5, num_tasks=3)
    tasks = env.tasks()
    members = _grid()
    stacked = StackedGradientPlanner(members)
    groups = len(members)
    with frozen(dynamics, score):
        together = stacked.solve(
            stacked.problem(system, env), tasks.x0.repeat(groups, 1), tasks.goal.repeat(groups, 1)
        )
        alone = [m.solve(m.problem(system, env), tasks.x0, tasks.goal) for m in members]
    for member, part, own in zip(members, stacked.split(together), alone, strict=True):
        assert torch.allclose(part.actions, own.actions, atol=ATOL, rtol=0), member.name
        assert torch.allclose(part.states, own.states, atol=ATOL, rtol=0), member.name
        assert torch.allclose(part.cost_planned, own.cost_planned, atol=ATOL, rtol=0), member.name
        assert torch.allclose(part.history["cost"], own.history["cost"], atol=ATOL, rtol=0), member.name
        assert torch.equal(part.history["level"], own.history["level"]), member.name
        assert torch.equal(part.history["diverged_at"], own.history["diverged_at"]), member.name
    # the groups really plan with different β: their plans are far apart (so a mixed-up β would show)
    plans = [own.actions for own in alone[1:]]
    assert all((a - b).abs().max() > 1e-3 for i, a in enumerate(plans) for b in plans[i + 1 :])
    assert torch.equal(alone[0].actions, alone[1].actions)  # β = 0 is β = 0, with or without a penalty


def test_beta_zero_rows_evaluate_no_score():
    dynamics, score = _random_models()
    calls = []
    original = score.net.forward
    score.net.forward = lambda z, level: calls.append(tuple(z.shape)) or original(z, level)
    penalty = ScorePenalty(score, [0.0, 1.0, math.inf])
    states, actions = torch.zeros(6, 4, 2), torch.randn(6, 4, 2)
    value = penalty(states, actions, torch.tensor([0, 0, 2, 2, 3, 3]))
    assert calls == [(4, 4, 4)]  # the two rows of each β > 0 group, all T pairs in one call
    assert torch.equal(value[:2], torch.zeros(2)) and (value[2:] != 0).all()
    # β = inf keeps the penalty at weight 1 and drops the cost of its rows only
    cost = torch.ones(6)
    assert torch.equal(penalty.task_term(cost), torch.tensor([1.0, 1, 1, 1, 0, 0]))
    with pytest.raises(SGPError, match="cannot be split into 3 equal groups"):
        penalty(torch.zeros(4, 4, 2), torch.zeros(4, 4, 2), 0)


def test_stack_planners_groups_only_planners_that_differ_in_beta():
    ensemble = {"penalty": EnsemblePenalty, "dynamics": "ensemble_mean"}
    planners = [
        GradientPlanner(name="sgp", beta=1.0, penalty=ScorePenalty, optimizer={"start_level": 4}),
        GradientPlanner(name="vanilla", beta=0.0),
        CEMPlanner(name="cem"),
        GradientPlanner(name="landing", beta="inf", penalty=ScorePenalty),
        GradientPlanner(name="other_lr", beta=1.0, penalty=ScorePenalty, optimizer={"lr": 0.1}),
        GradientPlanner(name="ensemble", beta=0.5, **ensemble),
        GradientPlanner(name="ensemble_2", beta=2.0, **ensemble),
        GradientPlanner(name="ensemble_0", beta=0.0, **ensemble),  # alone: its rollout is another code path
    ]
    assert stack_planners(planners) == [[0, 1, 3], [2], [4], [5, 6], [7]]
    with pytest.raises(SGPError, match="only planners that differ in β"):
        StackedGradientPlanner([planners[0], planners[4]])


def _random_system(seed: int = 0) -> SGPSystem:
    """A randomly initialised pit system (dynamics + score): enough to plan with, no training."""
    torch.manual_seed(seed)
    env = {"_target_": "sgp_lightning.envs.IntegratorEnv", "name": "pit", "pit_radius": 0.4,
           "hole_radius": 0.4, "num_tasks": 4, "horizon": 6}  # fmt: skip
    score = {"hidden_dims": [16], "sigma_max": 0.5, "sigma_min": 0.1, "num_levels": 4}
    return SGPSystem("pit", [2], [2], env, dynamics={"hidden_dims": [16]}, score=score)


def test_evaluate_all_stacks_methods_and_reports_what_separate_solves_do():
    system = _random_system()
    env = system.make_env()
    planners = {m.name: m for m in _grid()}
    planners["cem"] = CEMPlanner(name="cem", optimizer={"iterations": 3, "population": 4, "elites": 2})
    runs = {
        stack: OpenLoopTasks(stack=stack, track_true_cost_every=7).evaluate_all(system, env, planners, seed=0)
        for stack in (True, False)
    }
    for together, alone in zip(runs[True], runs[False], strict=True):
        assert together.method == alone.method
        a, b = together.summary(), alone.summary()
        for key in ("cost_planned", "cost_achieved", "model_error", "outside_data", "time_in_trap"):
            assert a[key] == pytest.approx(b[key], abs=ATOL), (together.method, key)
        assert a["convergence"]["iteration"] == b["convergence"]["iteration"]
        assert a["convergence"]["true_cost"] == pytest.approx(b["convergence"]["true_cost"], abs=ATOL)
        assert torch.allclose(together.true_states, alone.true_states, atol=ATOL, rtol=0)
        stacked = together.method != "cem"
        assert a.get("solved_with") == (list(planners)[:5] if stacked else None)
        assert "solved_with" not in b
