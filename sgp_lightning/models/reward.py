"""Learned reward r_θ(x, u), for domains whose reward is only known through data (e.g. D4RL)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sgp_lightning.models.base import Batch, OptimizerFactory, PartModel
from sgp_lightning.nets import MLP
from sgp_lightning.normalization import Normalizer


class RewardModel(PartModel):
    part_name = "reward"

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.state_norm = Normalizer(state_dim)
        self.action_norm = Normalizer(action_dim)
        self.reward_norm = Normalizer(1)
        self.net = MLP(state_dim + action_dim, 1, list(hidden_dims), activation)

    def set_normalizers(self, stats) -> None:
        self.state_norm.set_stats(*stats["x"])
        self.action_norm.set_stats(*stats["u"])
        self.reward_norm.set_stats(*stats["r"])

    def predict_normalized(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.state_norm(x), self.action_norm(u)], -1)).squeeze(-1)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Reward of (x, u), shape x.shape[:-1]."""
        return self.reward_norm.denormalize(self.predict_normalized(x, u).unsqueeze(-1)).squeeze(-1)

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        target = self.reward_norm(batch["r"].unsqueeze(-1)).squeeze(-1)
        return F.mse_loss(self.predict_normalized(batch["x"], batch["u"]), target)
