"""Ensemble of K dynamics networks (the baselines' uncertainty), trained and evaluated in one vmap call."""

from __future__ import annotations

import torch

from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch
from sgp_lightning.models.dynamics import DynamicsModel
from sgp_lightning.nets import Ensemble
from sgp_lightning.spaces import feature_sum


class EnsembleDynamicsModel(DynamicsModel):
    r"""
    K dynamics networks of one architecture, evaluated in one vmap call; predictions are `(K, …)`.

    Members differ by their random initialisation and, with `bootstrap`, by training on their own
    resample (with replacement) of every batch. Planning rolls out the members' mean and penalises their
    disagreement (variance of the normalized predictions, summed over the state's features).

    Args:
        state_shape, action_shape (`int` or `list[int]`):
            As in [`DynamicsModel`].
        num_members (`int`, *optional*, defaults to 5):
            K, at least 2.
        bootstrap (`bool`, *optional*, defaults to `True`):
            Each member trains on its own resample of every training batch (validation scores every
            member on the whole batch).
        **dynamics:
            Every other [`DynamicsModel`] argument (`architecture`, `hidden_dims`, `residual`, …), the
            same for all members.
    """

    part_name = "ensemble"

    def __init__(self, state_shape, action_shape, num_members: int = 5, bootstrap: bool = True, **dynamics):
        self.num_members = int(num_members)
        require(self.num_members >= 2, f"model.ensemble.num_members must be ≥ 2, got {num_members}")
        super().__init__(state_shape, action_shape, **dynamics)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.bootstrap = bootstrap

    def build_net(self, architecture, hidden_dims, activation, unet):
        return Ensemble(self.num_members, lambda: super(EnsembleDynamicsModel, self).build_net(
            architecture, hidden_dims, activation, unet))  # fmt: skip

    def predict_normalized(self, x, u, num_members: int | None = None) -> torch.Tensor:
        r"""
        Every member's normalized prediction (see [`DynamicsModel.predict_normalized`]).

        Args:
            x, u (`torch.Tensor`):
                States and actions, as in [`~StateActionModel.normalized_input`].
            num_members (`int`, *optional*):
                Use only the first members (default: all K).

        Returns:
            `torch.Tensor` of shape `(K, …, *output_shape)`: in normalized target units.
        """
        return self.net(self.normalized_input(x, u), num_members=num_members)

    def forward(self, x: torch.Tensor, u: torch.Tensor, num_members: int | None = None) -> torch.Tensor:
        r"""
        Every member's next state. Arguments as in [`~EnsembleDynamicsModel.predict_normalized`].

        Returns:
            `torch.Tensor` of shape `(K, *x.shape)`: next states in the data's units.
        """
        return self.to_state(x, u, self.predict_normalized(x, u, num_members))

    def mean_prediction(
        self, x: torch.Tensor, u: torch.Tensor, num_members: int | None = None
    ) -> torch.Tensor:
        r"""
        The members' mean next state (the state the ensemble baselines roll out). Arguments as in
        [`~EnsembleDynamicsModel.predict_normalized`].

        Returns:
            `torch.Tensor` of shape `x.shape`: in the data's units.
        """
        return self(x, u, num_members).mean(0)

    def disagreement(self, x: torch.Tensor, u: torch.Tensor, num_members: int | None = None) -> torch.Tensor:
        r"""
        The members' disagreement at (x, u): Σ over features of Var_k of their normalized predictions.
        Arguments as in [`~EnsembleDynamicsModel.predict_normalized`].

        Returns:
            `torch.Tensor` of shape `x.shape[:-len(state_shape)]`: in normalized target units squared.
        """
        return self.spread(self.predict_normalized(x, u, num_members))

    def spread(self, predictions: torch.Tensor) -> torch.Tensor:
        r"""
        Σ over features of Var_k (population variance) of predictions already computed.

        Args:
            predictions (`torch.Tensor` of shape `(K, …, *output_shape)`):
                Normalized predictions, as [`~EnsembleDynamicsModel.predict_normalized`] returns them.

        Returns:
            `torch.Tensor` of shape `(…)`: in normalized target units squared.
        """
        return feature_sum(predictions.var(0, unbiased=False), self.output_shape)

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        r"""
        Mean squared error of every member against [`~DynamicsModel.target`]; in training (no
        `generator`) with `bootstrap`, member k is scored on its own resample of the batch.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x`, `u` and `x_next`.
            generator (`torch.Generator`, *optional*):
                Given in validation: then every member is scored on the whole batch.

        Returns:
            `torch.Tensor`: the scalar loss (mean over members, batch and coordinates).
        """
        inputs, target = self.normalized_input(batch["x"], batch["u"]), self.target(batch)
        if self.bootstrap and generator is None:  # training; validation scores every member on the batch
            n = inputs.shape[0]
            index = torch.randint(0, n, (self.num_members, n), device=inputs.device)
            error = self.net(inputs[index], stacked=True) - target[index]
        else:
            error = self.net(inputs) - target
        return error.square().mean()
