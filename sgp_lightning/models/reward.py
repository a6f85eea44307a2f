"""Learned reward r_θ(x, u), for domains whose reward is only known through data (e.g. D4RL)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sgp_lightning.models.base import Batch, OptimizerFactory, StateActionModel, build_network
from sgp_lightning.normalization import Normalizer


class RewardModel(StateActionModel):
    """MLP on normalized (x, u) of vector domains."""

    part_name = "reward"

    def __init__(
        self,
        state_shape,
        action_shape,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(state_shape, action_shape, optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.reward_norm = Normalizer(1)
        self.net = build_network("mlp", self.input_shape, (1,), hidden_dims, activation, None)

    def set_normalizers(self, stats) -> None:
        super().set_normalizers(stats)
        self.reward_norm.set_stats(*stats["r"])

    def predict_normalized(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalized_input(x, u)).squeeze(-1)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Reward of (x, u), shape x.shape[:-1]."""
        return self.reward_norm.denormalize(self.predict_normalized(x, u).unsqueeze(-1)).squeeze(-1)

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        target = self.reward_norm(batch["r"].unsqueeze(-1)).squeeze(-1)
        return F.mse_loss(self.predict_normalized(batch["x"], batch["u"]), target)
