"""Behaviour cloning: a deterministic MLP policy π(x) regressing the data's actions (the BC baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch, OptimizerFactory, StateActionModel, build_network
from sgp_lightning.spaces import is_image


class PolicyModel(StateActionModel):
    """MLP from normalized x to normalized u, trained with mean squared error (vector domains)."""

    part_name = "policy"

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
        require(
            not is_image(self.state_shape) and not is_image(self.action_shape),
            "model.policy (behaviour cloning) takes vector states and actions",
        )
        self.net = build_network("mlp", self.state_shape, self.action_shape, hidden_dims, activation, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The action for each state, in the data's units."""
        return self.action_norm.denormalize(self.net(self.state_norm(x)))

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        return F.mse_loss(self.net(self.state_norm(batch["x"])), self.action_norm(batch["u"]))
