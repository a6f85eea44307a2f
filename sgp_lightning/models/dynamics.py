"""Learned dynamics x' = f_θ(x, u), trained by regression in normalized space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sgp_lightning.models.base import Batch, OptimizerFactory, PartModel
from sgp_lightning.nets import MLP
from sgp_lightning.normalization import Normalizer


class DynamicsModel(PartModel):
    """MLP on normalized (x, u). With `residual`, it predicts the normalized change x' − x."""

    part_name = "dynamics"

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        residual: bool = True,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.residual = residual
        self.state_norm = Normalizer(state_dim)
        self.action_norm = Normalizer(action_dim)
        self.target_norm = Normalizer(state_dim)  # of x' − x if residual, else of x'
        self.net = MLP(state_dim + action_dim, state_dim, list(hidden_dims), activation)

    def set_normalizers(self, stats) -> None:
        self.state_norm.set_stats(*stats["x"])
        self.action_norm.set_stats(*stats["u"])
        self.target_norm.set_stats(*stats["dx" if self.residual else "x_next"])

    def predict_normalized(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.state_norm(x), self.action_norm(u)], -1))

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        out = self.target_norm.denormalize(self.predict_normalized(x, u))
        return x + out if self.residual else out

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        target = batch["x_next"] - batch["x"] if self.residual else batch["x_next"]
        return F.mse_loss(self.predict_normalized(batch["x"], batch["u"]), self.target_norm(target))
