"""Learned reward r_θ(x, u), for domains whose reward is only known through data (e.g. D4RL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgp_lightning.models.base import Batch, MLPModel
from sgp_lightning.normalization import Normalizer


class RewardModel(MLPModel):
    r"""
    An MLP regressing the normalized reward from normalized (x, u), for vector domains. It keeps the
    reward's normalizer (`reward_norm`) as buffers beside the state and action ones. Arguments (`state_shape`,
    `action_shape` and, by keyword, `hidden_dims`, `activation`, `optimizer`) as in [`MLPModel`].
    """

    part_name = "reward"

    def __init__(self, state_shape, action_shape, **mlp):
        super().__init__(state_shape, action_shape, **mlp)
        self.reward_norm = Normalizer(1)

    def mlp_shapes(self):
        return self.input_shape, (1,)

    def set_normalizers(self, stats) -> None:
        """Reads the `x`, `u` and `r` statistics."""
        super().set_normalizers(stats)
        self.reward_norm.set_stats(*stats["r"])

    def predict_normalized(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        The network's output: the normalized reward.

        Args:
            x, u (`torch.Tensor`):
                States and actions, as in [`~StateActionModel.normalized_input`].

        Returns:
            `torch.Tensor` of shape `(…)`: rewards in normalized units.
        """
        return self.net(self.normalized_input(x, u)).squeeze(-1)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        The predicted reward of (x, u).

        Args:
            x, u (`torch.Tensor`):
                States and actions, as in [`~StateActionModel.normalized_input`].

        Returns:
            `torch.Tensor` of shape `(…)`: rewards in the data's units (shape `x.shape[:-1]`).
        """
        return self.reward_norm.denormalize(self.predict_normalized(x, u).unsqueeze(-1)).squeeze(-1)

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        r"""
        Mean squared error of the normalized predicted reward against the batch's normalized `r`.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x` `(B, n)`, `u` `(B, m)` and `r` `(B,)`.
            generator (`torch.Generator`, *optional*):
                Unused (the loss draws no noise).

        Returns:
            `torch.Tensor`: the scalar loss, in normalized reward units squared.
        """
        target = self.reward_norm(batch["r"].unsqueeze(-1)).squeeze(-1)
        return F.mse_loss(self.predict_normalized(batch["x"], batch["u"]), target)
