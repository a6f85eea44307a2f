"""Behaviour cloning: a deterministic MLP policy π(x) regressing the data's actions (the BC baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch, MLPModel
from sgp_lightning.spaces import is_image


class PolicyModel(MLPModel):
    r"""
    Behaviour cloning: an MLP from normalized x to normalized u, trained with the mean squared error
    (vector domains). Arguments as in [`MLPModel`].
    """

    part_name = "policy"
    acts = True

    def mlp_shapes(self):
        require(
            not is_image(self.state_shape) and not is_image(self.action_shape),
            "model.policy (behaviour cloning) takes vector states and actions",
        )
        return self.state_shape, self.action_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""
        The policy's action for each state.

        Args:
            x (`torch.Tensor` of shape `(…, n)`):
                States in the data's units.

        Returns:
            `torch.Tensor` of shape `(…, m)`: actions in the data's units.
        """
        return self.action_norm.denormalize(self.net(self.state_norm(x)))

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        r"""
        Mean squared error of the normalized predicted actions against the batch's normalized actions.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x` `(B, n)` and `u` `(B, m)`.
            generator (`torch.Generator`, *optional*):
                Unused (the loss draws no noise).

        Returns:
            `torch.Tensor`: the scalar loss, in normalized action units squared.
        """
        return F.mse_loss(self.net(self.state_norm(batch["x"])), self.action_norm(batch["u"]))
