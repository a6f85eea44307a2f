"""Your own offline dataset (`domain=offline`): transitions of the OfflineEnv's dataset, held out by episode.

The env (`sgp_lightning.envs.OfflineEnv`) names the dataset (a D4RL-layout HDF5, a Minari dataset, an `.npz`
or arrays registered from Python, see `sgp_lightning.data.offline`), infers its shapes and chooses the
held-out episodes; this datamodule serves them, so training, validation and the HeldOutEpisodes evaluator
see the same split.
"""

from __future__ import annotations

import torch

from datamodules.base import TransitionDataModule
from datamodules.d4rl import transitions
from sgp_lightning.envs.offline import OfflineEnv
from sgp_lightning.errors import require


class OfflineDataModule(TransitionDataModule):
    r"""
    Transitions (x, u, x', r, done) of an [`OfflineEnv`]'s dataset; the validation split is its held-out
    episodes (`env.val_fraction`, `env.split_seed`).

    Args:
        env (`OfflineEnv`):
            The offline domain's env (it loads the dataset).
        batch_size (`int`, *optional*, defaults to 1024):
            Transitions per batch.
        seed (`int`, *optional*, defaults to 0):
            Seed of the shuffling.
        normalization (`str`, *optional*, defaults to `"zscore"`):
            As in [`TransitionDataModule`] (train.py's `normalization`).
    """

    def __init__(self, env: OfflineEnv, batch_size: int = 1024, seed: int = 0, normalization: str = "zscore"):
        require(
            isinstance(env, OfflineEnv), f"OfflineDataModule needs an OfflineEnv, got {type(env).__name__}"
        )
        super().__init__(
            batch_size,
            env.val_fraction,
            seed,
            name=f"offline dataset {env.dataset!r}",
            normalization=normalization,
        )
        self.env = env
        self.metadata: dict = {}

    def load_transitions(self) -> dict[str, torch.Tensor]:
        data = self.env.data
        self.metadata = data["metadata"]
        return transitions(data)

    def split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of the env's held-out episodes, and the others."""
        held_out = torch.from_numpy(self.env.held_out())
        return held_out.nonzero().flatten(), (~held_out).nonzero().flatten()
