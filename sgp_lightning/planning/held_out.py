"""Evaluate a planner without a simulator, against an offline dataset's held-out episodes (`domain=offline`).

- Model error against the prediction horizon: from every held-out window of H consecutive steps of one
  episode, the planner's dynamics roll the recorded actions out from the recorded first state;
  error_k = mean ‖x̂_k − x_k‖ over the windows, k = 1 … H (the data's units).
- Each plan's distance to the training data, in the score's normalized (x, u) space (sgp_lightning.distance):
  exact (Euclidean distance of each planned (x_t, u_t) to its nearest training pair) and smoothed (d_σ² of
  eq. 4 with C = 0 at the score's smallest σ), averaged over the plan's steps.
- The plan's predicted return (Σ_t learned reward along the learned model's states), beside the data's own
  return over the same steps from the same held-out states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from sgp_lightning.distance import nearest_distance, smoothed_distance_sq
from sgp_lightning.errors import require
from sgp_lightning.planning.evaluate import as_array, prediction_error
from sgp_lightning.planning.planners import Planner, make_planner
from sgp_lightning.planning.problem import PlanResult, frozen


def window_starts(held_out: np.ndarray, episodes: np.ndarray, length: int) -> np.ndarray:
    """Rows r of held-out episodes such that rows r … r+length−1 lie in r's episode, (W,) int64."""
    starts = np.flatnonzero(held_out[: len(held_out) - length + 1])
    return starts[episodes[starts + length - 1] == episodes[starts]]


@dataclass
class HeldOutEvaluation:
    method: str
    plan: PlanResult  # plans from held-out states: actions (B, T, m), learned states (B, T+1, n)
    model_error_horizon: torch.Tensor  # (H,) mean ‖x̂_k − x_k‖ over held-out windows, k = 1 … H
    predicted_return: torch.Tensor  # (B,) Σ_t learned reward of the plan
    data_return: torch.Tensor  # (B,) Σ_t recorded reward of the data's next T steps from the same states
    distance_exact: torch.Tensor | None  # (B,) mean over t of the nearest training pair's distance
    distance_smoothed_sq: torch.Tensor | None  # (B,) mean over t of d_σ² (eq. 4, C = 0) at σ_min
    seconds: float
    episodes: object | None = None  # an EpisodeEvaluation when the env has a gym_id

    def summary(self) -> dict:
        out = {
            "predicted_return": float(self.predicted_return.mean()),
            "data_return": float(self.data_return.mean()),
            "model_error": float(self.model_error_horizon.mean()),
            "model_error_horizon": self.model_error_horizon.tolist(),
            "seconds": self.seconds,
        }
        if self.distance_exact is not None:
            out["distance_exact"] = float(self.distance_exact.mean())
            out["distance_smoothed_sq"] = float(self.distance_smoothed_sq.mean())
        per_task = {"predicted_return": self.predicted_return, "data_return": self.data_return,
                    "distance_exact": self.distance_exact, "distance_smoothed_sq": self.distance_smoothed_sq}  # fmt: skip
        values = {k: v.tolist() for k, v in per_task.items() if v is not None}
        out["per_task"] = [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
        if self.episodes is not None:
            out["episodes"] = self.episodes.summary()
        return out

    def trajectories(self) -> dict[str, np.ndarray]:
        """The plans as arrays (trajectories.npz holds them under `<method>/<key>`): `actions` (B, T, m) and
        the learned model's `planned_states` (B, T+1, n) from the held-out states (float32, the data's units;
        no true states: there is no simulator). With a gym_id also the episodes' arrays
        (`EpisodeEvaluation.trajectories`) under `episodes/<key>`."""
        out = {"actions": as_array(self.plan.actions), "planned_states": as_array(self.plan.states)}
        if self.episodes is not None:
            out.update({f"episodes/{key}": value for key, value in self.episodes.trajectories().items()})
        return out


@torch.no_grad()
def model_error_horizon(problem, x, u, x_next, starts: np.ndarray, horizon: int) -> torch.Tensor:
    """(H,) mean error of the problem's rollout of the recorded actions from each window's first state."""
    index = torch.as_tensor(starts)[:, None] + torch.arange(horizon)  # (W, H) rows of each window
    x0 = x[index[:, 0]]
    true_states = torch.cat([x0[:, None], x_next[index]], 1)  # (W, H+1, n), as the rollout lays them out
    return prediction_error(problem.rollout(x0, u[index]), true_states).mean(0)


def evaluate_held_out(
    system,
    env,
    planner: Planner,
    method: str = "",
    num_tasks: int = 16,
    max_windows: int = 1000,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> HeldOutEvaluation | None:
    """Plan from `num_tasks` seeded held-out states (this rank's share) and measure as the module says.
    Model error uses at most `max_windows` seeded held-out windows of `env.horizon` steps."""
    planner = make_planner(planner)
    data, held_out = env.data, env.held_out()
    horizon = int(planner.horizon or env.horizon)
    device = system.device
    x, u, x_next, r = (
        torch.from_numpy(data[key]).to(device)
        for key in ("observations", "actions", "next_observations", "rewards")
    )
    rng = np.random.default_rng(seed)
    starts = window_starts(held_out, data["episodes"], horizon)
    require(
        len(starts) > 0,
        f"{env.dataset}: no held-out episode has {horizon} steps; lower the horizon or hold out more episodes",
    )
    windows = starts if len(starts) <= max_windows else rng.choice(starts, max_windows, replace=False)
    tasks = rng.choice(starts, num_tasks, replace=len(starts) < num_tasks)[rank::world_size]
    if len(tasks) == 0:
        return None
    problem = planner.problem(system, env, horizon)
    errors = model_error_horizon(problem, x, u, x_next, np.sort(windows), horizon)
    x0 = x[torch.as_tensor(tasks)]
    start = time.perf_counter()
    with frozen(system):
        plan = planner.solve(problem, x0, torch.zeros_like(x0))  # the learned reward has no goal
    seconds = time.perf_counter() - start
    data_return = r[torch.as_tensor(tasks)[:, None] + torch.arange(horizon)].sum(1)
    exact = smoothed = None
    if system.score is not None:
        with torch.no_grad():
            train = torch.from_numpy(~held_out).to(device)
            reference = system.score.normalize_pair(x[train], u[train])
            z = system.score.normalize_pair(plan.states[:, :-1], plan.actions)  # (B, T, n + m)
            exact = nearest_distance(z, reference).mean(1)
            sigma = float(system.score.schedule.sigmas[-1])
            smoothed = smoothed_distance_sq(z.flatten(0, 1), reference, sigma).view(z.shape[:2]).mean(1)
    return HeldOutEvaluation(
        method or planner.name, plan, errors, -plan.cost_planned, data_return, exact, smoothed, seconds
    )
