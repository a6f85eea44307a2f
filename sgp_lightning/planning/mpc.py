"""Receding-horizon control: re-plan from the true state every step, warm-started by the shifted plan."""

from __future__ import annotations

import torch

from sgp_lightning.envs import Env
from sgp_lightning.errors import require
from sgp_lightning.planning.optimizers import CEMPlanner, GradientPlanner
from sgp_lightning.planning.problem import PlanResult, ShootingProblem


class MPC:
    def __init__(
        self, planner: GradientPlanner | CEMPlanner, iterations: int | None = None, warm_start: bool = True
    ):
        """`iterations` per re-plan after the first solve (default: the planner's own)."""
        self.planner, self.warm_start = planner, warm_start
        self.iterations = iterations
        require(iterations is None or iterations > 0, f"mpc iterations must be positive, got {iterations}")
        self.reset()

    def reset(self) -> None:
        """Forget the previous plan: the next `act` solves from scratch with the planner's own iterations."""
        self._plan: torch.Tensor | None = None
        self._first = True

    def act(self, problem: ShootingProblem, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """One receding-horizon step from states x (B, …): solve (warm-started by the previous plan shifted
        by one step) and return the first action of the new plan."""
        plan = self.planner.solve(
            problem, x, goal, init_actions=self._plan, iterations=None if self._first else self.iterations
        )
        self._first = False
        if self.warm_start:
            self._plan = torch.cat([plan.actions[:, 1:], plan.actions[:, -1:]], 1).detach()
        return plan.actions[:, 0]

    def run(
        self, problem: ShootingProblem, env: Env, x0: torch.Tensor, goal: torch.Tensor, steps: int
    ) -> PlanResult:
        """Execute `steps` actions on the true env. Returns the executed actions, the learned model's
        prediction of them from x0 (`states`, `cost_planned`) and, in history, the true states."""
        require(steps > 0, f"mpc steps must be positive, got {steps}")
        self.reset()
        x, executed, true_states = x0, [], [x0]
        for _ in range(steps):
            u = self.act(problem, x, goal)
            with torch.no_grad():
                x = env.step(x, u)
            executed.append(u)
            true_states.append(x)
        actions = torch.stack(executed, 1)
        with torch.no_grad():
            states = problem.rollout(x0, actions)
            cost_planned = problem.cost(states, actions, goal)
        history = {"true_states": torch.stack(true_states, 1)}
        return PlanResult(actions, states, cost_planned, history)
