"""First-order planner: Adam on the action sequence with the noise level annealed over iterations (B.2)."""

from __future__ import annotations

import torch

from sgp_lightning.errors import require
from sgp_lightning.planning.problem import PlanResult, ShootingProblem


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
        shape = (x0.shape[0], problem.horizon, problem.action_dim)
        if self.init_std == 0:
            return x0.new_zeros(shape)
        generator = torch.Generator(device=x0.device).manual_seed(self.seed)
        return self.init_std * torch.randn(shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def solve(
        self,
        problem: ShootingProblem,
        x0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: torch.Tensor | None = None,
        iterations: int | None = None,
    ) -> PlanResult:
        iterations = int(iterations or self.iterations)
        actions = self.initial_actions(problem, x0) if init_actions is None else init_actions.detach().clone()
        require(
            actions.shape[1] == problem.horizon,
            f"initial actions have horizon {actions.shape[1]}, the problem {problem.horizon}",
        )
        actions.requires_grad_(True)
        optimizer = torch.optim.Adam([actions], lr=self.lr)
        schedule = problem.penalty.schedule if problem.penalty.uses_levels else None
        costs, levels = [], []
        for i in range(iterations):
            level = schedule.level_at(i, iterations, self.start_level) if schedule is not None else None
            objective, cost, _ = problem.objective(x0, goal, actions, level)
            optimizer.zero_grad(set_to_none=True)
            # Tasks are independent, so the sum's gradient is each task's own gradient.
            objective.sum().backward()
            if self.grad_clip:
                # Per task, so a task's step never depends on the others in the batch.
                norms = actions.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                actions.grad.mul_((self.grad_clip / norms).clamp(max=1.0)[:, None, None])
            optimizer.step()
            costs.append(cost.detach())
            levels.append(-1 if level is None else level)
        with torch.no_grad():
            actions = actions.detach()
            states = problem.rollout(x0, actions)
            cost_planned = problem.cost(states, actions, goal)
        history = {"cost": torch.stack(costs), "level": torch.tensor(levels)}
        return PlanResult(actions, states, cost_planned, history)
