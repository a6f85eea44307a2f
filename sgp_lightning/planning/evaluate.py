"""Plan a batch of tasks with a planner, roll the actions out on the true env, and measure.

The headline metric everywhere is cost of the plan (under the learned model) versus cost achieved (the same
actions on the true env); model_error is the mean distance between the predicted and the true states, and
model_error_horizon the same distance against the number of steps predicted ahead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sgp_lightning.envs import Env, Tasks
from sgp_lightning.errors import require
from sgp_lightning.planning.controller import Controller
from sgp_lightning.planning.planners import GradientPlanner, Planner, StackedGradientPlanner, make_planner
from sgp_lightning.planning.problem import PlanResult, ShootingProblem, frozen


class TrueCostMonitor:
    """Records the true cost of the current plan every `every` planner iterations (paper Fig. 2F): the
    decision variables are mapped to actions and rolled out on the true env, outside autograd."""

    def __init__(self, problem: ShootingProblem, env: Env, tasks: Tasks, true_cost, every: int):
        require(every > 0, f"track_true_cost_every must be positive, got {every}")
        self.problem, self.env, self.tasks, self.true_cost, self.every = problem, env, tasks, true_cost, every
        self.iterations: list[int] = []
        self.costs: list[torch.Tensor] = []
        self.seconds = 0.0  # spent recording, so the planner's own time can be reported without it

    @torch.no_grad()
    def record(self, iteration: int, actions: torch.Tensor) -> None:
        start = time.perf_counter()
        states = self.env.rollout(self.tasks.x0, actions)
        self.iterations.append(iteration)
        self.costs.append(self.true_cost(states, actions, self.tasks.goal))
        self.seconds += time.perf_counter() - start

    def __call__(self, iteration: int, decision: torch.Tensor) -> None:
        if iteration % self.every == 0:
            self.record(iteration, self.problem.actions_of(decision))

    def history(self) -> dict[str, torch.Tensor]:
        return {"true_cost": torch.stack(self.costs), "true_cost_iteration": torch.tensor(self.iterations)}


def prediction_error(states: torch.Tensor, true_states: torch.Tensor) -> torch.Tensor:
    r"""
    Distance of predicted states from the true ones at each step ahead.

    Args:
        states (`torch.Tensor` of shape `(B, K+1, *state_shape)`):
            States predicted by the learned model from `true_states[:, 0]`, in the domain's units.
        true_states (`torch.Tensor` of the same shape):
            The states the same actions reached on the true system.

    Returns:
        `torch.Tensor` of shape `(B, K)`: ‖x̂_k − x_k‖ for k = 1..K steps ahead, in the domain's state units
        (images: the pixel-wise L2 norm).
    """
    return (states[:, 1:] - true_states[:, 1:]).flatten(2).norm(dim=-1)


def as_array(tensor: torch.Tensor) -> np.ndarray:
    """A CPU array for trajectories.npz (floats as float32)."""
    array = tensor.detach().cpu().numpy()
    return array.astype(np.float32) if array.dtype.kind == "f" else array


@dataclass
class Evaluation:
    method: str
    plan: PlanResult
    true_states: torch.Tensor  # (B, T+1, *state_shape)
    cost_planned: torch.Tensor  # (B,)
    cost_achieved: torch.Tensor  # (B,)
    model_error: torch.Tensor  # (B,) mean over t of ‖x̂_t − x_t‖ (images: the pixel-wise L2 norm)
    seconds: float
    success: torch.Tensor | None = None  # (B,) bool: the true rollout solved the task (env.success)
    outside_data: torch.Tensor | None = None  # (B,) share of planned steps outside the data region
    time_in_trap: torch.Tensor | None = None  # (B,) share of true steps in the domain's trap (the pit)
    goal: torch.Tensor | None = None  # (B, *state_shape) the tasks' goals
    # the methods planned in the same batched solve (`seconds` is that solve's)
    solved_with: tuple[str, ...] | None = None

    @property
    def failed(self) -> torch.Tensor:
        """(B,) bool: tasks whose plan became non-finite (actions, planned or achieved cost)."""
        actions_ok = torch.isfinite(self.plan.actions).flatten(1).all(1)
        return ~(actions_ok & torch.isfinite(self.cost_planned) & torch.isfinite(self.cost_achieved))

    def summary(self) -> dict:
        """Means over the tasks (failed tasks left out and listed in `failed_tasks` with the iteration their
        objective first became non-finite, -1 if unknown), per-task values and the convergence curve."""
        per_task = [
            {"cost_planned": float(p), "cost_achieved": float(a), "model_error": float(e)}
            for p, a, e in zip(self.cost_planned, self.cost_achieved, self.model_error, strict=True)
        ]
        failed = self.failed
        ok = ~failed
        # k = 1..T steps ahead of x0: the model's open-loop prediction of the actions against the truth
        by_horizon = prediction_error(self.plan.states, self.true_states)[ok].mean(0)
        out = {
            "cost_planned": float(self.cost_planned[ok].mean()),
            "cost_achieved": float(self.cost_achieved[ok].mean()),
            "model_error": float(self.model_error[ok].mean()),
            "model_error_horizon": by_horizon.tolist(),
            "seconds": self.seconds,
        }
        if self.solved_with is not None:
            out["solved_with"] = list(self.solved_with)
        if failed.any():
            diverged = self.plan.history.get("diverged_at", torch.full_like(self.cost_planned, -1).long())
            out["failed_tasks"] = [
                {"task": int(i), "diverged_at": int(diverged[i])} for i in failed.nonzero().flatten().tolist()
            ]
            for i in out["failed_tasks"]:
                per_task[i["task"]]["failed"] = True
        for key, values in (
            ("success_rate", self.success), ("outside_data", self.outside_data), ("time_in_trap", self.time_in_trap)
        ):  # fmt: skip
            if values is not None:
                out[key] = float(values[ok].float().mean())
                for task, value in zip(per_task, values.tolist(), strict=True):
                    task[key] = float(value)
        if "true_cost" in self.plan.history:  # the convergence curve: mean true cost over the tasks
            out["convergence"] = {
                "iteration": self.plan.history["true_cost_iteration"].tolist(),
                "true_cost": self.plan.history["true_cost"].mean(1).tolist(),
            }
        return {**out, "per_task": per_task}

    def trajectories(self) -> dict[str, np.ndarray]:
        r"""
        The plan and its true rollout as arrays (trajectories.npz holds them under `<method>/<key>`).

        Returns:
            `dict[str, np.ndarray]` (floats as float32, in the domain's units; B tasks, T steps):
            - `actions` `(B, T, *action_shape)`: the plan's actions (MPC: the executed ones).
            - `planned_states` `(B, T+1, *state_shape)`: the learned model's states under `actions` from x0.
            - `true_states` `(B, T+1, *state_shape)`: the true env's states under `actions` from x0
              (`env.rollout(true_states[:, 0], actions)`; MPC: the states it met).
            - `goal` `(B, *state_shape)`: each task's goal.
            - `cost_planned`, `cost_achieved` `(B,)`: task cost of the planned and of the true states.
        """
        arrays = {
            "actions": self.plan.actions,
            "planned_states": self.plan.states,
            "true_states": self.true_states,
            "goal": self.goal,
            "cost_planned": self.cost_planned,
            "cost_achieved": self.cost_achieved,
        }
        return {key: as_array(value) for key, value in arrays.items() if value is not None}


def plan_and_evaluate(
    system,
    env: Env,
    tasks: Tasks,
    planner: Planner | Mapping,
    mpc: bool = False,
    method: str = "",
    track_true_cost_every: int | None = None,
) -> Evaluation:
    """Plan every task in one batch (open loop, or MPC on the true env) and evaluate on the true env.

    `planner` is a Planner or its config. With `track_true_cost_every` = k (open loop only), the true cost
    of the plan is recorded every k iterations (history["true_cost"]); the time that takes is excluded
    from `seconds`."""
    planner = make_planner(planner)
    tasks = tasks.to(system.device)
    steps = int(planner.horizon or env.horizon)
    true_cost = planner.true_cost(system, env)
    mpc = mpc or not planner.uses_model  # a policy acts step by step on the true env
    if mpc:
        start = time.perf_counter()
        # Its states and cost_planned are the learned model's prediction of all executed actions from x0.
        plan = Controller(system, planner, env, horizon=planner.mpc.horizon or steps).run(
            env, tasks.x0, tasks.goal, steps
        )
        seconds = time.perf_counter() - start
        # the states MPC met on the true env (a stochastic env would not repeat them)
        return measure(method or planner.name, plan, plan.history["true_states"], env, tasks.goal, true_cost,
                       seconds)  # fmt: skip
    plan, seconds = _solve_open_loop(system, env, tasks, planner, steps, true_cost, track_true_cost_every)
    return _measure_open_loop(method or planner.name, plan, env, tasks, true_cost, seconds)


def plan_and_evaluate_stacked(
    system,
    env: Env,
    tasks: Tasks,
    planners: Sequence[GradientPlanner],
    methods: Sequence[str],
    track_true_cost_every: int | None = None,
) -> list[Evaluation]:
    """Open-loop plans of G gradient planners that differ only in β (and start level) as one batched solve
    of G × B rows (StackedGradientPlanner), evaluated per planner as `plan_and_evaluate` would (each
    `seconds` is the shared solve's, and `solved_with` names the methods of that solve)."""
    stacked = StackedGradientPlanner(planners)
    tasks = tasks.to(system.device)
    steps = int(stacked.horizon or env.horizon)
    true_cost = stacked.true_cost(system, env)
    repeated = tasks.select(torch.arange(len(tasks), device=tasks.x0.device).repeat(len(planners)))
    plan, seconds = _solve_open_loop(system, env, repeated, stacked, steps, true_cost, track_true_cost_every)
    curve = {
        key: plan.history.pop(key) for key in ("true_cost", "true_cost_iteration") if key in plan.history
    }
    evaluations = []
    for g, (method, part) in enumerate(zip(methods, stacked.split(plan), strict=True)):
        if curve:  # the true-cost records of this group's rows; their iterations are shared
            rows = slice(g * len(tasks), (g + 1) * len(tasks))
            part.history.update(
                true_cost=curve["true_cost"][:, rows], true_cost_iteration=curve["true_cost_iteration"]
            )
        evaluation = _measure_open_loop(method, part, env, tasks, true_cost, seconds)
        evaluation.solved_with = tuple(methods)
        evaluations.append(evaluation)
    return evaluations


def _solve_open_loop(
    system, env, tasks: Tasks, planner: Planner, steps: int, true_cost, track_every: int | None
):
    """(the open-loop plan of every task, the seconds it took without the true-cost recording)."""
    start, monitor = time.perf_counter(), None
    problem = planner.problem(system, env, steps)
    if track_every:
        monitor = TrueCostMonitor(problem, env, tasks, true_cost, int(track_every))
    with frozen(system):
        plan = planner.solve(problem, tasks.x0, tasks.goal, monitor=monitor)
    if monitor is not None:
        monitor.record(planner.iterations, plan.actions)  # the returned plan, after the last step
        plan.history.update(monitor.history())
    return plan, time.perf_counter() - start - (monitor.seconds if monitor is not None else 0.0)


def _measure_open_loop(method: str, plan: PlanResult, env: Env, tasks: Tasks, true_cost, seconds: float):
    with torch.no_grad():
        true_states = env.rollout(tasks.x0, plan.actions)
    return measure(method, plan, true_states, env, tasks.goal, true_cost, seconds)


@torch.no_grad()
def measure(method: str, plan: PlanResult, true_states: torch.Tensor, env: Env, goal: torch.Tensor, true_cost,
            seconds: float) -> Evaluation:  # fmt: skip
    """The evaluation of a plan (its actions and the learned model's states) against the true states that
    the same actions, or the same policy, produced: achieved cost, model error and the domain's metrics."""
    outside = env.outside_data(plan.states, plan.actions)
    return Evaluation(
        method,
        plan,
        true_states,
        plan.cost_planned,
        true_cost(true_states, plan.actions, goal),
        prediction_error(plan.states, true_states).mean(1),
        seconds,
        env.success(true_states, goal),
        None if outside is None else outside.float().mean(1),
        env.time_in_trap(true_states),
        goal,
    )
