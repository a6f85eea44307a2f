"""Ensemble of K dynamics networks (the baselines' uncertainty), trained and evaluated in one vmap call."""

from __future__ import annotations

import torch

from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch
from sgp_lightning.models.dynamics import DynamicsModel
from sgp_lightning.nets import Ensemble
from sgp_lightning.spaces import feature_sum


class EnsembleDynamicsModel(DynamicsModel):
    """K dynamics networks of one architecture, evaluated in one vmap call; predictions are (K, …).

    Members differ by their random initialisation and, with `bootstrap`, by training on their own
    resample (with replacement) of every batch. Planning rolls out the members' mean and penalises their
    disagreement (variance of the normalized predictions, summed over the state's features).
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
        return self.net(self.normalized_input(x, u), num_members=num_members)

    def forward(self, x: torch.Tensor, u: torch.Tensor, num_members: int | None = None) -> torch.Tensor:
        """Every member's next state, (K, *x.shape); `num_members` keeps only the first K."""
        return self.to_state(x, u, self.predict_normalized(x, u, num_members))

    def mean_prediction(
        self, x: torch.Tensor, u: torch.Tensor, num_members: int | None = None
    ) -> torch.Tensor:
        return self(x, u, num_members).mean(0)

    def disagreement(self, x: torch.Tensor, u: torch.Tensor, num_members: int | None = None) -> torch.Tensor:
        """Σ_features Var_k of the normalized predictions, shape x.shape[:-len(state_shape)]."""
        return self.spread(self.predict_normalized(x, u, num_members))

    def spread(self, predictions: torch.Tensor) -> torch.Tensor:
        """Σ_features Var_k of normalized predictions (K, …) already computed."""
        return feature_sum(predictions.var(0, unbiased=False), self.output_shape)

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        inputs, target = self.normalized_input(batch["x"], batch["u"]), self.target(batch)
        if self.bootstrap and generator is None:  # training; validation scores every member on the batch
            n = inputs.shape[0]
            index = torch.randint(0, n, (self.num_members, n), device=inputs.device)
            error = self.net(inputs[index], stacked=True) - target[index]
        else:
            error = self.net(inputs) - target
        return error.square().mean()
