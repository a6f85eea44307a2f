"""Implicit Q-learning (Kostrikov, Nair & Levine, 2021): expectile value learning and advantage-weighted
regression, an offline-RL baseline trained on the same transitions as the planning models."""

from __future__ import annotations

import math

import torch

from sgp_lightning.errors import require
from sgp_lightning.models.actor_critic import ActorCriticModel, soft_update
from sgp_lightning.models.base import Batch

LOG_STD_RANGE = (-20.0, 2.0)  # the Gaussian actor's log-std is clamped to this range (as in CORL)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    r"""
    The asymmetric squared loss `|τ − 1(d < 0)| d²`, averaged: its minimiser over a constant v of
    `d = q − v` is the τ-expectile of q (τ = 0.5: the mean; τ → 1: the maximum).

    Args:
        diff (`torch.Tensor`):
            Differences d = q − v, any shape.
        expectile (`float`):
            τ in (0, 1).

    Returns:
        `torch.Tensor`: the scalar loss.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


class IQLModel(ActorCriticModel):
    r"""
    IQL as an SGPSystem part (`model.iql`). Each optimiser step sums three losses on one batch, each
    reaching its own network only:
    - value: `expectile_loss(min_k Q'_k(x, u) − V(x), τ)`, V approaching the τ-expectile of the target
      critics over the data's actions;
    - critics: `½ Σ_k (Q_k(x, u) − (r + γ (1 − done) V(x')))²`;
    - actor (advantage-weighted regression): `−min(exp(β (Q'(x, u) − V(x))), max_weight) · log π(u | x)`,
      π(· | x) a Gaussian with mean `max_action · tanh(MLP(x̄))` and a state-independent std;
    then the target critics move by τ. The policy acts with its mean.

    Args:
        state_shape, action_shape, hidden_dims, activation, max_action, discount, tau, lr, optimizer:
            As in [`ActorCriticModel`] (the value network has the same hidden widths).
        expectile (`float`, *optional*, defaults to 0.7):
            τ of the value's expectile loss, in (0, 1) (the paper's value for locomotion).
        beta (`float`, *optional*, defaults to 3.0):
            Inverse temperature β of the advantage weights (0: plain behaviour cloning).
        max_weight (`float`, *optional*, defaults to 100.0):
            Advantage weights are clipped at this value.
    """

    part_name = "iql"

    def __init__(
        self,
        state_shape,
        action_shape,
        expectile: float = 0.7,
        beta: float = 3.0,
        max_weight: float = 100.0,
        **actor_critic,
    ):
        from sgp_lightning.nets import MLP

        super().__init__(state_shape, action_shape, **actor_critic)
        require(0 < expectile < 1, f"model.iql.expectile must be in (0, 1), got {expectile}")
        require(beta >= 0, f"model.iql.beta must be ≥ 0, got {beta}")
        require(max_weight > 0, f"model.iql.max_weight must be positive, got {max_weight}")
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.expectile, self.beta, self.max_weight = float(expectile), float(beta), float(max_weight)
        self.value = MLP(self.state_shape[0], 1, self.hidden_dims, self.activation)
        self.log_std = torch.nn.Parameter(torch.zeros(self.action_shape[0]))

    def state_value(self, x: torch.Tensor) -> torch.Tensor:
        r"""
        V(x).

        Args:
            x (`torch.Tensor` of shape `(…, n)`):
                States in the data's units.

        Returns:
            `torch.Tensor` of shape `(…)`: values in reward units.
        """
        return self.value(self.state_norm(x)).squeeze(-1)

    def log_prob(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        log π(u | x) of the Gaussian policy.

        Args:
            x (`torch.Tensor` of shape `(B, n)`):
                States in the data's units.
            u (`torch.Tensor` of shape `(B, m)`):
                Actions in the data's units.

        Returns:
            `torch.Tensor` of shape `(B,)`: log-densities, summed over action coordinates.
        """
        mean = self.act_normalized(self.state_norm(x))
        log_std = self.log_std.clamp(*LOG_STD_RANGE)
        z = (u - mean) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        r"""
        The three losses of one step.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions: `x`, `x_next` `(B, n)`, `u` `(B, m)`, `r` `(B,)`, optionally `done` `(B,)`.

        Returns:
            `dict[str, torch.Tensor]`: scalar `value`, `critic` and `actor` losses.
        """
        with torch.no_grad():
            target_q = self.q_values(batch["x"], batch["u"], target=True).min(0).values
            target = self.bootstrap_target(batch, self.state_value(batch["x_next"]))
        advantage = target_q - self.state_value(batch["x"])
        weights = torch.exp(self.beta * advantage.detach()).clamp(max=self.max_weight)
        q = self.q_values(batch["x"], batch["u"])
        return {
            "value": expectile_loss(advantage, self.expectile),
            "critic": ((q - target) ** 2).mean(-1).mean(),
            "actor": -(weights * self.log_prob(batch["x"], batch["u"])).mean(),
        }

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""
        The sum of [`~IQLModel.losses`].

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions, as in [`~IQLModel.losses`].
            generator (`torch.Generator`, *optional*):
                Unused (the loss draws no noise).

        Returns:
            `torch.Tensor`: the scalar loss.
        """
        return sum(self.losses(batch).values())

    def update_targets(self) -> None:
        soft_update(self.critic_target, self.critic, self.tau)
