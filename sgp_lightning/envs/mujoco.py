"""gymnasium MuJoCo v5 locomotion tasks and D4RL's normalised score.

The `d4rl` package cannot run offline (it needs MuJoCo 2.1 binaries and downloads its data), so the
project uses gymnasium's MuJoCo v5 envs, which are statistically close to D4RL's v2 envs but not
identical: results are labelled "v5, D4RL-normalised".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sgp_lightning.envs.base import Env
from sgp_lightning.errors import SGPError, require


@dataclass(frozen=True)
class MujocoTask:
    """One locomotion task: its gymnasium id and D4RL's reference returns (random and expert)."""

    name: str
    gym_id: str
    obs_dim: int
    action_dim: int
    ref_min_score: float
    ref_max_score: float
    medium_return: float  # rough mean episode return of D4RL's medium dataset (the behaviour policy's level)

    def normalized_score(self, returns):
        """D4RL's normalised score: 100 · (R − random) / (expert − random)."""
        return (
            100.0
            * (np.asarray(returns, dtype=np.float64) - self.ref_min_score)
            / (self.ref_max_score - self.ref_min_score)
        )


# Reference returns are D4RL's (d4rl/infos.py, v2 envs).
MUJOCO_TASKS: dict[str, MujocoTask] = {
    "halfcheetah": MujocoTask("halfcheetah", "HalfCheetah-v5", 17, 6, -280.178953, 12135.0, 4800.0),
    "hopper": MujocoTask("hopper", "Hopper-v5", 11, 3, -20.272305, 3234.3, 1400.0),
    "walker2d": MujocoTask("walker2d", "Walker2d-v5", 17, 6, 1.629008, 4592.3, 2900.0),
}


def mujoco_task(name: str) -> MujocoTask:
    require(name in MUJOCO_TASKS, f"unknown MuJoCo task {name!r}; choose one of {sorted(MUJOCO_TASKS)}")
    return MUJOCO_TASKS[name]


class MujocoEnv(Env):
    """A D4RL locomotion domain for planning: dimensions, the planning horizon and the action box.

    Its true system is a gymnasium env, not batched torch code: it is evaluated by running seeded episodes
    with MPC (`sgp_lightning.planning.episodes`), and the reward the planner maximises is learned.
    """

    episodic = True  # evaluated by episodes in the gymnasium env, not by open-loop tasks
    # Open-loop methods (step, tasks, costs, nominal_goal) raise SGPError saying to use episodes.

    def __init__(
        self,
        name: str,
        task: str,
        horizon: int = 5,
        num_episodes: int = 10,
        episode_steps: int = 1000,
        episode_seed: int = 100_000,
    ):
        self.name, self.task = name, mujoco_task(task)
        self.state_dim, self.action_dim = self.task.obs_dim, self.task.action_dim
        require(horizon > 0, f"horizon must be positive, got {horizon}")
        require(num_episodes > 0, f"num_episodes must be positive, got {num_episodes}")
        require(episode_steps > 0, f"episode_steps must be positive, got {episode_steps}")
        self.horizon, self.num_episodes = int(horizon), int(num_episodes)
        self.episode_steps, self.episode_seed = int(episode_steps), int(episode_seed)

    def normalize_action(self, actions: torch.Tensor) -> torch.Tensor:
        """MuJoCo clamps controls to the actuators' range [−1, 1]; planners see the same clamp."""
        return actions.clamp(-1.0, 1.0)

    def _episodes_only(self, what: str) -> SGPError:
        return SGPError(
            f"{self.name} is an episodic domain (MujocoEnv): it has no {what}; its true system is the "
            f"gymnasium env {self.task.gym_id} and its reward is learned. Evaluate it with episodes: plan.py "
            "and the PlanningCallback run MPC episodes for it (sgp_lightning.planning.episodes.run_episodes), "
            "and its planners plan with the learned reward (cost_source: learned)"
        )

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Raises `SGPError`: the true system is a gymnasium env stepped inside episodes, not batched torch
        code (`sgp_lightning.planning.episodes.run_episodes` steps it)."""
        raise self._episodes_only("batched torch step")

    def tasks(self):
        """Raises `SGPError`: an episodic domain has no open-loop tasks; it is evaluated by `num_episodes`
        seeded episodes of up to `episode_steps` steps (seeds from `episode_seed`)."""
        raise self._episodes_only("open-loop tasks")

    def stage_cost(self, x: torch.Tensor, u: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Raises `SGPError`: the reward is the gymnasium env's, known only inside episodes."""
        raise self._episodes_only("differentiable cost")

    def terminal_cost(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Raises `SGPError`, as `stage_cost`."""
        raise self._episodes_only("differentiable cost")

    def nominal_goal(self) -> torch.Tensor:
        """Raises `SGPError`: locomotion has no goal state (the dataset's rewards are the env's own)."""
        raise self._episodes_only("goal state")
