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

    def run(
        self, problem: ShootingProblem, env: Env, x0: torch.Tensor, goal: torch.Tensor, steps: int
    ) -> PlanResult:
        """Execute `steps` actions on the true env. Returns the executed actions, the learned model's
        prediction of them from x0 (`states`, `cost_planned`) and, in history, the true states."""
        require(steps > 0, f"mpc steps must be positive, got {steps}")
        x, plan_actions, executed, true_states = x0, None, [], [x0]
        for step in range(steps):
            plan = self.planner.solve(
                problem, x, goal, init_actions=plan_actions, iterations=None if step == 0 else self.iterations
            )
            u = plan.actions[:, 0]
            with torch.no_grad():
                x = env.step(x, u)
            executed.append(u)
            true_states.append(x)
            if self.warm_start:
                plan_actions = torch.cat([plan.actions[:, 1:], plan.actions[:, -1:]], 1)
        actions = torch.stack(executed, 1)
        with torch.no_grad():
            states = problem.rollout(x0, actions)
            cost_planned = problem.cost(states, actions, goal)
        history = {"true_states": torch.stack(true_states, 1)}
        return PlanResult(actions, states, cost_planned, history)
