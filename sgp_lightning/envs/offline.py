"""The offline domain: your own dataset, no simulator (`domain=offline`).

Its "true system" is the recorded data: `OfflineEnv` knows the dataset (a file, a Minari dataset or arrays
registered from Python), its shapes and action bounds, and which episodes are held out. It has no dynamics,
cost or tasks of its own: planners maximise the learned reward, and the `HeldOutEpisodes` evaluator measures
the models and plans against the held-out episodes (and runs gymnasium episodes when `gym_id` is given).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgp_lightning.data.offline import check_action_range, load_offline, split_episodes
from sgp_lightning.envs.base import Env
from sgp_lightning.envs.mujoco import MujocoTask
from sgp_lightning.errors import SGPError, require


class OfflineEnv(Env):
    r"""
    A domain defined by a recorded dataset. Shapes, action bounds and reference returns are read from the
    data when not given; [`~OfflineEnv.saved_config`] writes them into the checkpoint, so a trained system
    rebuilds its env (and its Controller acts) without the data.

    Args:
        name (`str`, *optional*, defaults to `"offline"`):
            Domain name.
        dataset (`str`, *optional*):
            A `.npz` or D4RL-layout `.hdf5` path or name, a Minari dataset directory or id, or a key from
            `sgp_lightning.data.offline.register_arrays` (see `sgp_lightning.data.offline`).
        state_dim (`int`, *optional*), action_dim (`int`, *optional*):
            Sizes of observations and actions; inferred from the data when `None`.
        action_low (`float` or `list[float]`, *optional*), action_high (`float` or `list[float]`, *optional*):
            A declared action range (every action of the data must lie in it). `None`: a Minari dataset's
            action space if bounded, else the data's per-dimension min and max.
        horizon (`int`, *optional*, defaults to 5):
            Planning steps T of the evaluator's open-loop plans and of its model-error curve.
        val_fraction (`float`, *optional*, defaults to 0.1):
            Share of whole episodes held out (validation losses and evaluation).
        split_seed (`int`, *optional*, defaults to 0):
            Seed of which episodes are held out.
        gym_id (`str`, *optional*):
            A gymnasium env to also run MPC episodes in (e.g. `Hopper-v5`); `None`: no simulator.
        ref_min_score (`float`, *optional*), ref_max_score (`float`, *optional*):
            Returns of a random and an expert policy, for normalized scores of those episodes; `None`: a
            Minari dataset's, if it has them.
        num_episodes (`int`, *optional*, defaults to 10), episode_steps (`int`, *optional*, defaults to
        1000), episode_seed (`int`, *optional*, defaults to 100000):
            The gymnasium episodes (as `MujocoEnv`'s).
    """

    episodic = True  # no open-loop tasks: evaluated against held-out episodes (and gymnasium episodes)

    def __init__(
        self,
        name: str = "offline",
        dataset: str | None = None,
        state_dim: int | None = None,
        action_dim: int | None = None,
        action_low: float | list[float] | None = None,
        action_high: float | list[float] | None = None,
        horizon: int = 5,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        gym_id: str | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        num_episodes: int = 10,
        episode_steps: int = 1000,
        episode_seed: int = 100_000,
    ):
        require(horizon > 0, f"horizon must be positive, got {horizon}")
        require(0 < val_fraction < 1, f"val_fraction must be in (0, 1), got {val_fraction}")
        require(num_episodes > 0, f"num_episodes must be positive, got {num_episodes}")
        require(episode_steps > 0, f"episode_steps must be positive, got {episode_steps}")
        require(
            (action_low is None) == (action_high is None),
            "declare both action_low and action_high, or neither (then they are inferred from the data)",
        )
        self.name, self.dataset = name, None if dataset is None else str(dataset)
        self.horizon, self.val_fraction, self.split_seed = int(horizon), float(val_fraction), int(split_seed)
        self.gym_id = gym_id
        self.num_episodes, self.episode_steps, self.episode_seed = (
            int(num_episodes), int(episode_steps), int(episode_seed)
        )  # fmt: skip
        self.action_range_declared = action_low is not None
        self.ref_min_score, self.ref_max_score = ref_min_score, ref_max_score
        inferred = state_dim is None or action_dim is None or action_low is None
        if inferred or ref_min_score is None:
            require(
                self.dataset is not None or not inferred,
                "the offline domain needs a dataset (domain.env.dataset=PATH) or its state_dim, action_dim, "
                "action_low and action_high",
            )
        if self.dataset is not None and inferred:
            data = self.data  # loads and checks the dataset once (cached for the datamodule)
            metadata = data["metadata"]
            state_dim = state_dim or data["observations"].shape[1]
            action_dim = action_dim or data["actions"].shape[1]
            if action_low is None and "action_low" in metadata:
                action_low, action_high = metadata["action_low"], metadata["action_high"]
                self.action_range_declared = True
            if action_low is None:  # the data's range (documented in sgp_lightning.data.offline)
                action_low, action_high = data["actions"].min(0).tolist(), data["actions"].max(0).tolist()
            if ref_min_score is None and "ref_min_score" in metadata:
                self.ref_min_score = float(metadata["ref_min_score"])
                self.ref_max_score = float(metadata["ref_max_score"])
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.action_low = np.broadcast_to(np.asarray(action_low, np.float32), (self.action_dim,)).tolist()
        self.action_high = np.broadcast_to(np.asarray(action_high, np.float32), (self.action_dim,)).tolist()
        if self.dataset is not None and self.action_range_declared and inferred:
            check_action_range(self.data, self.action_low, self.action_high, self.dataset)

    # ---------------------------------------------------------------- data
    @property
    def data(self) -> dict:
        """The dataset's transitions (`sgp_lightning.data.offline.load_offline`), with `episodes`."""
        require(
            self.dataset is not None,
            f"{self.name}: this env names no dataset; held-out episodes need one (domain.env.dataset=PATH)",
        )
        data = load_offline(self.dataset)
        require(
            data["observations"].shape[1] == getattr(self, "state_dim", data["observations"].shape[1])
            and data["actions"].shape[1] == getattr(self, "action_dim", data["actions"].shape[1]),
            f"{self.dataset} has observations of size {data['observations'].shape[1]} and actions of size "
            f"{data['actions'].shape[1]}, but this system was trained on "
            f"{getattr(self, 'state_dim', '?')} and {getattr(self, 'action_dim', '?')}",
        )
        return data

    def held_out(self) -> np.ndarray:
        """(N,) bool: the rows of held-out episodes (`split_episodes` with `val_fraction`, `split_seed`)."""
        return split_episodes(self.data["episodes"], self.val_fraction, self.split_seed)

    def saved_config(self, config: dict) -> dict:
        """The config with what was inferred from the data written in, so the env rebuilds without it."""
        return {
            **config,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "action_low": self.action_low,
            "action_high": self.action_high,
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
        }

    # ---------------------------------------------------------------- planning
    def normalize_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Clamped to the action bounds: plans stay within the range the data declares or covers."""
        low = torch.tensor(self.action_low, dtype=actions.dtype, device=actions.device)
        high = torch.tensor(self.action_high, dtype=actions.dtype, device=actions.device)
        return torch.maximum(torch.minimum(actions, high), low)

    def neutral_action(self) -> torch.Tensor:
        """The middle of the action bounds."""
        return (torch.tensor(self.action_low) + torch.tensor(self.action_high)) / 2

    @property
    def task(self) -> MujocoTask:
        """The gymnasium env of `gym_id` with the reference returns, for MPC episodes."""
        require(self.gym_id is not None, f"{self.name}: no gym_id, so no episodes to run")
        nan = math.nan
        low = nan if self.ref_min_score is None else self.ref_min_score
        high = nan if self.ref_max_score is None else self.ref_max_score
        return MujocoTask(self.name, self.gym_id, self.state_dim, self.action_dim, low, high, nan)

    def _no_simulator(self, what: str) -> SGPError:
        return SGPError(
            f"{self.name} is an offline domain (OfflineEnv): it has no {what}; its reward is learned and it is "
            "evaluated against held-out episodes (evaluator HeldOutEpisodes); plan with cost_source: learned "
            "(experiment=offline, or planner_set=d4rl)"
        )

    def step(self, x, u):
        """Raises `SGPError`: there is no simulator (set `gym_id` to also run gymnasium episodes)."""
        raise self._no_simulator("simulator")

    def stage_cost(self, x, u, goal):
        """Raises `SGPError`: the reward is learned from the data."""
        raise self._no_simulator("known cost")

    def terminal_cost(self, x, goal):
        """Raises `SGPError`, as `stage_cost`."""
        raise self._no_simulator("known cost")

    def nominal_goal(self):
        """Raises `SGPError`: the data's rewards need no goal state."""
        raise self._no_simulator("goal state")
