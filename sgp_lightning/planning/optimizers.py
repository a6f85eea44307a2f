"""Planners over the action sequence: first-order (Adam with noise annealing, paper B.2) and zeroth-order
(the cross-entropy method). Both solve a ShootingProblem for a batch of tasks and return a PlanResult."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from sgp_lightning.errors import SGPError, require
from sgp_lightning.planning.problem import PlanResult, ShootingProblem


def _final_plan(problem: ShootingProblem, x0, goal, decision, history) -> PlanResult:
    with torch.no_grad():
        actions = problem.actions_of(decision.detach())
        states = problem.rollout(x0, actions)
        cost_planned = problem.cost(states, actions, goal)
    return PlanResult(actions, states, cost_planned, history)


def _starting_plan(problem: ShootingProblem, init_actions: torch.Tensor | None, default) -> torch.Tensor:
    """A copy of the warm start, or `default()` without one; its horizon must be the problem's."""
    actions = default() if init_actions is None else init_actions.detach().clone()
    require(
        actions.shape[1] == problem.horizon,
        f"initial actions have horizon {actions.shape[1]}, the problem {problem.horizon}",
    )
    return actions


# Called as monitor(iteration, decision) with the current plan's decision variables (e.g. to record the
# true cost of the plan during the solve, paper Fig. 2F); never changes the solve.
Monitor = Callable[[int, torch.Tensor], None]


def _per_task(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → broadcastable against (B, …) `like`."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class GradientPlanner:
    def __init__(
        self,
        iterations: int = 300,
        lr: float = 0.01,
        start_level: int = 0,
        init_std: float = 0.0,
        grad_clip: float | None = None,
        seed: int = 0,
    ):
        require(iterations > 0, f"planner iterations must be positive, got {iterations}")
        require(lr > 0, f"planner lr must be positive, got {lr}")
        require(init_std >= 0, f"init_std must be ≥ 0, got {init_std}")
        require(grad_clip is None or grad_clip > 0, f"grad_clip must be > 0 or null, got {grad_clip}")
        self.iterations, self.lr, self.start_level = int(iterations), float(lr), int(start_level)
        self.init_std, self.grad_clip, self.seed = float(init_std), grad_clip, int(seed)

    def initial_actions(self, problem: ShootingProblem, x0: torch.Tensor) -> torch.Tensor:
        actions = problem.neutral_plan(x0)
        if self.init_std == 0:
            return actions
        generator = torch.Generator(device=x0.device).manual_seed(self.seed)
        noise = torch.randn(actions.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return actions + self.init_std * noise * problem.scale_like(actions)

    def solve(
        self,
        problem: ShootingProblem,
        x0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: torch.Tensor | None = None,
        iterations: int | None = None,
        monitor: Monitor | None = None,
    ) -> PlanResult:
        iterations = int(iterations or self.iterations)
        actions = _starting_plan(problem, init_actions, lambda: self.initial_actions(problem, x0))
        # Adam steps in the problem's action units: optimise actions / scale (equal in raw units).
        scale = problem.scale_like(actions)
        steps = (actions / scale).requires_grad_(True)
        optimizer = torch.optim.Adam([steps], lr=self.lr)
        schedule = problem.penalty.schedule if problem.penalty.uses_levels else None
        costs, levels = [], []
        for i in range(iterations):
            level = schedule.level_at(i, iterations, self.start_level) if schedule is not None else None
            if monitor is not None:
                monitor(i, steps.detach() * scale)
            objective, cost, _ = problem.objective(x0, goal, steps * scale, level)
            optimizer.zero_grad(set_to_none=True)
            # Tasks are independent, so the sum's gradient is each task's own gradient.
            objective.sum().backward()
            if self.grad_clip:
                # Per task, so a task's step never depends on the others in the batch.
                norms = steps.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                steps.grad.mul_(_per_task((self.grad_clip / norms).clamp(max=1.0), steps))
            optimizer.step()
            costs.append(cost.detach())
            levels.append(-1 if level is None else level)
        history = {"cost": torch.stack(costs), "level": torch.tensor(levels)}
        return _final_plan(problem, x0, goal, steps.detach() * scale, history)


class CEMPlanner:
    """Cross-entropy method: sample `population` plans around a Gaussian per task, keep the `elites` with
    the lowest objective, refit the mean (and, with `update_std`, the std) to them. The current mean is
    one of the candidates (so a good mean can survive). Zeroth order: the penalty must
    have a value (ensemble variance or none); the score's surrogate only has a gradient."""

    def __init__(
        self,
        iterations: int = 100,
        population: int = 64,
        elites: int = 8,
        std: float = 0.05,
        update_std: bool = True,
        min_std: float = 0.0,
        max_batch: int | None = None,
        seed: int = 0,
    ):
        require(iterations > 0, f"CEM iterations must be positive, got {iterations}")
        require(population >= 2, f"CEM population must be ≥ 2, got {population}")
        require(0 < elites <= population, f"CEM elites must be in [1, population={population}], got {elites}")
        require(std > 0 and min_std >= 0, f"CEM std must be > 0 and min_std ≥ 0, got {std}, {min_std}")
        require(max_batch is None or max_batch > 0, f"CEM max_batch must be > 0 or null, got {max_batch}")
        self.iterations, self.population, self.elites = int(iterations), int(population), int(elites)
        self.std, self.update_std, self.min_std = float(std), bool(update_std), float(min_std)
        self.max_batch, self.seed = max_batch, int(seed)

    @torch.no_grad()
    def _objective(self, problem: ShootingProblem, x0, goal, candidates):
        """Objective and task cost of (B, P, T, …) candidates, evaluated in chunks of ≤ max_batch plans."""
        batch, population = candidates.shape[:2]
        flat = candidates.flatten(0, 1)
        x0 = x0.repeat_interleave(population, 0)
        goal = goal.repeat_interleave(population, 0)
        chunk = self.max_batch or flat.shape[0]
        parts = [
            problem.objective(x0[i : i + chunk], goal[i : i + chunk], flat[i : i + chunk], None)[:2]
            for i in range(0, flat.shape[0], chunk)
        ]
        objective = torch.cat([p[0] for p in parts]).view(batch, population)
        cost = torch.cat([p[1] for p in parts]).view(batch, population)
        return objective, cost

    def solve(
        self,
        problem: ShootingProblem,
        x0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: torch.Tensor | None = None,
        iterations: int | None = None,
        monitor: Monitor | None = None,
    ) -> PlanResult:
        if problem.penalty.gradient_only:
            raise SGPError(
                "CEM needs a penalty with a value (penalty=ensemble or none); the score penalty only "
                "provides gradients, so plan with the gradient planner instead"
            )
        iterations = int(iterations or self.iterations)
        mean = _starting_plan(problem, init_actions, lambda: problem.neutral_plan(x0))
        std = torch.full_like(mean, self.std) * problem.scale_like(mean)  # `std` is in the problem's units
        generator = torch.Generator(device=x0.device).manual_seed(self.seed)
        costs, best_objectives = [], []
        for i in range(iterations):
            if monitor is not None:
                monitor(i, mean)
            noise = torch.randn(
                (mean.shape[0], self.population - 1, *mean.shape[1:]),
                generator=generator, device=mean.device, dtype=mean.dtype,
            )  # fmt: skip
            candidates = torch.cat([mean.unsqueeze(1), mean.unsqueeze(1) + std.unsqueeze(1) * noise], 1)
            objective, cost = self._objective(problem, x0, goal, candidates)
            order = objective.argsort(dim=1)[:, : self.elites]
            index = order.view(*order.shape, *([1] * (mean.dim() - 1))).expand(-1, -1, *mean.shape[1:])
            elites = candidates.gather(1, index)
            costs.append(cost.gather(1, order[:, :1]).squeeze(1))
            best_objectives.append(objective.gather(1, order[:, :1]).squeeze(1))
            mean = elites.mean(1)
            if self.update_std:
                std = torch.maximum(elites.std(1, unbiased=False), self.min_std * problem.scale_like(mean))
        history = {"cost": torch.stack(costs), "objective": torch.stack(best_objectives)}
        return _final_plan(problem, x0, goal, mean, history)


ALGORITHMS = {"gradient": GradientPlanner, "cem": CEMPlanner}


def build_planner(algorithm: str, settings: Mapping | None):
    require(
        algorithm in ALGORITHMS,
        f"unknown planner.algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}",
    )
    try:
        return ALGORITHMS[algorithm](**dict(settings or {}))
    except TypeError as err:
        raise SGPError(f"planner.optimizer ({algorithm}): {err}") from None
