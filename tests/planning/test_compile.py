"""The captured planner iteration (`optimizer.compile`): plans equal eager ones within float rounding, the
annealed noise level is data (no recompile per level), and bad settings fail in the constructor.

The default run captures with the `aot_eager` backend (dynamo's graph and AOTAutograd's backward, the parts
that could change what is computed, in seconds); generated kernels (`inductor`, a minute to compile on 2
cores) are checked in the slow suite. A GPU's `reduce-overhead` (CUDA graphs) runs in benchmarks/gpu.sh.
"""

import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.envs import IntegratorEnv
from sgp_lightning.planning import EnsemblePenalty, GradientPlanner, ScorePenalty, ShootingProblem, frozen
from tests.planning.test_planners import _random_models

ADAM = {"iterations": 30, "lr": 0.05, "init_std": 0.1, "grad_clip": 1.0, "seed": 3}


def _solve(penalty, compile_mode=None, backend="inductor"):
    dynamics, score = _random_models(1)
    env = IntegratorEnv(horizon=5, num_tasks=4)
    tasks = env.tasks()
    problem = ShootingProblem(dynamics, env.cost, penalty(score), 5, torch.zeros(2))
    planner = GradientPlanner(optimizer={**ADAM, "compile": compile_mode, "compile_backend": backend})
    with frozen(dynamics, score):
        return planner.solve(problem, tasks.x0, tasks.goal)


def _score_penalty(score):
    return ScorePenalty(score, 0.5)


def _assert_same_plan(eager, captured):
    assert torch.allclose(captured.actions, eager.actions, atol=1e-5)
    assert torch.allclose(captured.states, eager.states, atol=1e-5)
    assert torch.allclose(captured.history["cost"], eager.history["cost"], rtol=1e-5, atol=1e-6)
    assert torch.equal(captured.history["level"], eager.history["level"])


def test_captured_iteration_equals_eager_and_never_recompiles_for_a_new_level():
    eager = _solve(_score_penalty)
    assert len(set(eager.history["level"].tolist())) == 4  # the solve walks all 4 noise levels
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):  # a level passed as an int would recompile
        captured = _solve(_score_penalty, "default", backend="aot_eager")
    _assert_same_plan(eager, captured)


def test_captured_ensemble_penalty_equals_eager():
    """The ensemble penalty's own rollout (the members' mean, vmapped members) captures too."""
    from sgp_lightning.models import EnsembleDynamicsModel

    torch.manual_seed(0)
    ensemble = EnsembleDynamicsModel(2, 2, num_members=3, hidden_dims=[16])

    def penalty(_score):
        return EnsemblePenalty(ensemble, 0.3)

    with frozen(ensemble):
        eager = _solve(penalty)
        torch._dynamo.reset()
        captured = _solve(penalty, "default", backend="aot_eager")
    _assert_same_plan(eager, captured)


def test_cost_history_survives_a_capture_that_reuses_its_output_buffers(monkeypatch):
    """CUDA graphs (`reduce-overhead`) hand back each replay's outputs in the same static buffers, so the
    solve must copy what it keeps past the next call; simulated here on the CPU."""
    from sgp_lightning.planning.planners import AdamSettings

    eager = _solve(_score_penalty)

    def static_buffers(self, problem):
        cost_buffer = []

        def objective(*args):
            objective, cost, rest = problem.objective(*args)
            if not cost_buffer:
                cost_buffer.append(torch.empty_like(cost))
            return objective, cost_buffer[0].copy_(cost.detach()), rest

        return objective

    monkeypatch.setattr(AdamSettings, "objective", static_buffers)
    captured = _solve(_score_penalty, "default")
    assert len(set(captured.history["cost"][:, 0].tolist())) > 1  # not every row the last call's
    _assert_same_plan(eager, captured)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"compile": "fast"}, "optimizer.compile must be one of"),
        ({"compile": "reduce-overhead", "compile_backend": "aot_eager"}, "a mode of the inductor backend"),
    ],
)
def test_bad_compile_settings_fail_in_the_constructor(settings, match):
    with pytest.raises(SGPError, match=match):
        GradientPlanner(optimizer=settings)


@pytest.mark.slow
def test_inductor_kernels_plan_as_eager():
    eager = _solve(_score_penalty)
    torch._dynamo.reset()
    _assert_same_plan(eager, _solve(_score_penalty, "default"))
