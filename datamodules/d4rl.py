"""D4RL locomotion data (paper C.2): transitions (x, u, r, x', done) from a D4RL-layout HDF5 file.

`dataset` is a path to a .hdf5 file, a Minari dataset directory, or a name looked up in
$D4RL_DATASET_DIR (~/.d4rl/datasets/<name>.hdf5) or Minari's dataset directory. Generate local files
with `python -m sgp_lightning.data.collect env=hopper dataset=medium`.
"""

from __future__ import annotations

import numpy as np
import torch

from datamodules.base import TransitionDataModule
from sgp_lightning.data.d4rl import episode_ids, read_dataset
from sgp_lightning.envs.mujoco import MujocoEnv
from sgp_lightning.errors import require


def transitions(data: dict) -> dict[str, torch.Tensor]:
    """D4RL-layout arrays as the transitions (x, u, x', r, done) a TransitionDataModule loads."""
    return {
        "x": torch.from_numpy(data["observations"]),
        "u": torch.from_numpy(data["actions"]),
        "x_next": torch.from_numpy(data["next_observations"]),
        "r": torch.from_numpy(data["rewards"]),
        "done": torch.from_numpy(data["terminals"]),  # a fall; a timeout is not an end of the dynamics
    }


class D4RLDataModule(TransitionDataModule):
    def __init__(self, env: MujocoEnv, dataset: str, max_transitions: int | None = None, **kwargs):
        """The env's observation and action sizes are checked against the file, so a dataset of another
        env fails clearly; `max_transitions` keeps a seeded random subset of whole episodes with about that
        many rows (small runs; every part of a medium-expert file is represented)."""
        super().__init__(name=f"D4RL dataset {dataset!r}", **kwargs)
        require(
            max_transitions is None or max_transitions > 0,
            f"max_transitions must be positive, got {max_transitions}",
        )
        self.dataset, self.state_dim, self.action_dim = str(dataset), env.state_dim, env.action_dim
        self.max_transitions = max_transitions
        self.metadata: dict = {}

    def load_transitions(self) -> dict[str, torch.Tensor]:
        data = read_dataset(self.dataset)
        obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
        require(
            (obs_dim, act_dim) == (self.state_dim, self.action_dim),
            f"{self.name} has observations of size {obs_dim} and actions of size {act_dim}, but this domain "
            f"expects {self.state_dim} and {self.action_dim}: it is a dataset of another env",
        )
        if self.max_transitions is not None and self.max_transitions < len(data["rewards"]):
            data = self._episode_subset(data)
        self.metadata = data["metadata"]
        return transitions(data)

    def _episode_subset(self, data: dict) -> dict:
        """Whole episodes in a seeded random order, as many as fit in max_transitions (at least one)."""
        ids = episode_ids(data)
        lengths = np.bincount(ids)
        order = np.random.default_rng(self.seed).permutation(len(lengths))
        kept = order[: max(1, int(np.searchsorted(np.cumsum(lengths[order]), self.max_transitions, "right")))]
        rows = np.isin(ids, kept)
        return {k: v[rows] if isinstance(v, np.ndarray) else v for k, v in data.items()}
