"""Learned dynamics x' = f_θ(x, u), trained by regression in normalized space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from sgp_lightning.models.base import Batch, OptimizerFactory, StateActionModel, build_network
from sgp_lightning.normalization import Normalizer
from sgp_lightning.spaces import stats_shape


class DynamicsModel(StateActionModel):
    """MLP (vectors) or U-Net (images) on normalized (x, u). With `residual`, it predicts x' − x."""

    part_name = "dynamics"

    def __init__(
        self,
        state_shape,
        action_shape,
        architecture: str = "mlp",
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        residual: bool = True,
        unet: Mapping | None = None,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(state_shape, action_shape, optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.residual = residual
        self.target_norm = Normalizer(stats_shape(self.state_shape))  # of x' − x if residual, else of x'
        self.net = self.build_net(architecture, hidden_dims, activation, unet)

    def build_net(self, architecture, hidden_dims, activation, unet):
        return build_network(architecture, self.input_shape, self.state_shape, hidden_dims, activation, unet)

    def set_normalizers(self, stats) -> None:
        super().set_normalizers(stats)
        self.target_norm.set_stats(*stats["dx" if self.residual else "x_next"])

    def predict_normalized(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalized_input(x, u))

    def to_state(self, x: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        out = self.target_norm.denormalize(prediction)
        return x + out if self.residual else out

    def target(self, batch: Batch) -> torch.Tensor:
        raw = batch["x_next"] - batch["x"] if self.residual else batch["x_next"]
        return self.target_norm(raw)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.to_state(x, self.predict_normalized(x, u))

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        return (self.predict_normalized(batch["x"], batch["u"]) - self.target(batch)).square().mean()
