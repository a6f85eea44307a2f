"""Evaluate a method by seeded episodes in a gymnasium MuJoCo env (the D4RL domains, paper C.2).

A planner runs as MPC: every step it plans T = planner.mpc.horizon actions from the current observations of all episodes in
one batch (warm-started by the previous plan shifted by one), and the first action is executed. The BC
baseline (PolicyPlanner) acts with the system's behaviour-cloning policy. The episodes run as one
batch in a SyncVectorEnv; an episode's return stops counting when it ends (the copy's automatic reset
starts an episode that is ignored), and the loop stops when every episode has ended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from sgp_lightning.envs.mujoco import MujocoEnv
from sgp_lightning.planning.controller import Controller
from sgp_lightning.planning.planners import Planner
from sgp_lightning.planning.problem import frozen


@dataclass
class EpisodeEvaluation:
    method: str
    returns: np.ndarray  # (episodes,) undiscounted return of each episode
    normalized_scores: np.ndarray  # (episodes,) D4RL-normalised ×100
    lengths: np.ndarray  # (episodes,) steps until the episode ended (or the step limit)
    seconds: float
    steps: int  # control steps run (the longest episode)

    def summary(self) -> dict:
        return {
            "return_mean": float(self.returns.mean()),
            "return_std": float(self.returns.std()),
            "normalized_score": float(self.normalized_scores.mean()),
            "normalized_score_std": float(self.normalized_scores.std()),
            "episode_length": float(self.lengths.mean()),
            "seconds": self.seconds,
            "seconds_per_step": self.seconds / max(self.steps, 1),
            "per_episode": [
                {"return": float(r), "normalized_score": float(s), "length": int(n)}
                for r, s, n in zip(self.returns, self.normalized_scores, self.lengths, strict=True)
            ],
        }


def run_episodes(
    system,
    env: MujocoEnv,
    planner: Planner | Mapping,
    method: str = "",
    num_episodes: int | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> EpisodeEvaluation:
    """Run `num_episodes` seeded episodes (default: the env's) of at most `max_steps` steps with a
    Controller of `planner` (a Planner or its config); `progress` shows a bar over the control steps."""
    from sgp_lightning.data.rollout import make_vector_env

    controller = Controller(system, planner, env)
    episodes = int(num_episodes or env.num_episodes)
    max_steps = int(max_steps or env.episode_steps)
    seed = env.episode_seed if seed is None else int(seed)
    envs = make_vector_env(env.task, episodes)
    obs, _ = envs.reset(seed=seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=int)
    alive = np.ones(episodes, dtype=bool)
    start, steps = time.perf_counter(), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, desc=f"{method or controller.planner.name} episodes", disable=not progress)
    with frozen(system), bar:
        for steps in range(1, max_steps + 1):  # noqa: B007 (steps is reported)
            bar.update()
            x = torch.as_tensor(obs, dtype=torch.float32, device=system.device)
            u = env.normalize_action(
                controller.step(x, torch.zeros_like(x))
            )  # the learned reward has no goal
            obs, reward, terminated, truncated, _ = envs.step(u.detach().cpu().double().numpy())
            returns += reward * alive
            lengths += alive
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    envs.close()
    return EpisodeEvaluation(
        method or controller.planner.name,
        returns,
        env.task.normalized_score(returns),
        lengths,
        time.perf_counter() - start,
        steps,
    )
