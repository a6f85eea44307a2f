"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term in the actor loss, an offline-RL baseline
trained on the same transitions as the planning models."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call

from sgp_lightning.errors import require
from sgp_lightning.models.actor_critic import ActorCriticModel, soft_update
from sgp_lightning.models.base import Batch


class TD3BCModel(ActorCriticModel):
    r"""
    TD3+BC as an SGPSystem part (`model.td3bc`). Each optimiser step takes the critics' TD loss
    `Σ_k (Q_k(x, u) − y)²`, `y = r + γ (1 − done) min_k Q'_k(x', clip(π'(x') + ε))` with target-policy noise
    `ε = clip(N(0, policy_noise²), ±noise_clip)` (both in units of max_action); every `policy_delay`-th
    step it adds the actor loss `−λ Q_1(x, π(x)) + (π(x) − u)²`, `λ = α / mean|Q_1(x, π(x))|`, and then
    moves the target actor and critics by τ. The actor loss reaches the actor only (the critic is read
    with its weights detached); on the other steps the actor has no gradient, so Adam leaves it alone.

    One difference from the two-optimiser original: the critic and the actor step together from the same
    weights, so the actor's loss reads the critic before (not after) that step's critic update.

    Args:
        state_shape, action_shape, hidden_dims, activation, max_action, discount, tau, lr, optimizer:
            As in [`ActorCriticModel`].
        alpha (`float`, *optional*, defaults to 2.5):
            α, the weight of the Q term against behaviour cloning.
        policy_noise (`float`, *optional*, defaults to 0.2):
            Std of the target-policy smoothing noise, in units of max_action.
        noise_clip (`float`, *optional*, defaults to 0.5):
            The noise is clipped to ±noise_clip · max_action.
        policy_delay (`int`, *optional*, defaults to 2):
            The actor and the targets move on every `policy_delay`-th optimiser step.
        seed (`int`, *optional*, defaults to 0):
            Seeds the smoothing noise; step k draws from a generator seeded with (seed, k), so the noise is
            the same in a resumed run and leaves the global RNG (the other parts' noise) untouched.
    """

    part_name = "td3bc"

    def __init__(
        self,
        state_shape,
        action_shape,
        alpha: float = 2.5,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_delay: int = 2,
        seed: int = 0,
        **actor_critic,
    ):
        super().__init__(state_shape, action_shape, **actor_critic)
        require(alpha >= 0, f"model.td3bc.alpha must be ≥ 0, got {alpha}")
        require(
            policy_noise >= 0 and noise_clip >= 0,
            f"model.td3bc.policy_noise and noise_clip must be ≥ 0, got {policy_noise} and {noise_clip}",
        )
        require(
            int(policy_delay) == policy_delay and policy_delay >= 1,
            f"model.td3bc.policy_delay must be a positive integer, got {policy_delay}",
        )
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.alpha, self.policy_noise, self.noise_clip = float(alpha), float(policy_noise), float(noise_clip)
        self.policy_delay, self.seed = int(policy_delay), int(seed)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)

    def _noise(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:  # training: seeded per step (see `seed`)
            generator = torch.Generator(device=like.device).manual_seed(
                self.seed * 1_000_003 + int(self.updates)
            )
        noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        limit = self.noise_clip * self.max_action
        return (noise * self.policy_noise * self.max_action).clamp(-limit, limit)

    def critic_loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""
        The twin critics' TD loss with target-policy smoothing.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions: `x`, `x_next` `(B, n)`, `u` `(B, m)`, `r` `(B,)`, optionally `done` `(B,)`.
            generator (`torch.Generator`, *optional*):
                Source of the smoothing noise (None: the per-step generator of `seed`).

        Returns:
            `torch.Tensor`: the scalar loss, Σ over the two critics of the mean squared TD error.
        """
        with torch.no_grad():
            next_u = self.act_normalized(self.state_norm(batch["x_next"]), self.actor_target)
            next_u = (next_u + self._noise(next_u, generator)).clamp(-self.max_action, self.max_action)
            target = self.bootstrap_target(
                batch, self.q_values(batch["x_next"], next_u, target=True).min(0).values
            )
        q = self.q_values(batch["x"], batch["u"])
        return ((q - target) ** 2).mean(-1).sum()

    def actor_loss(self, batch: Batch) -> torch.Tensor:
        r"""
        −λ Q_1(x, π(x)) + (π(x) − u)², with the critic's weights detached (the gradient reaches the actor).

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x` `(B, n)` and `u` `(B, m)`.

        Returns:
            `torch.Tensor`: the scalar loss.
        """
        pi = self.act_normalized(self.state_norm(batch["x"]))
        detached = {name: p.detach() for name, p in self.critic.named_parameters()}
        q = functional_call(self.critic, detached, (torch.cat([self.state_norm(batch["x"]), pi], -1),))
        q1 = q[0].squeeze(-1)
        lam = self.alpha / q1.abs().mean().detach().clamp_min(1e-8)
        return -lam * q1.mean() + F.mse_loss(pi, batch["u"])

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""
        The critics' loss, plus the actor's on every `policy_delay`-th training step (always in evaluation
        mode, so validation reports both).

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions, as in [`~TD3BCModel.critic_loss`].
            generator (`torch.Generator`, *optional*):
                Source of the smoothing noise (validation passes a fixed one).

        Returns:
            `torch.Tensor`: the scalar loss.
        """
        loss = self.critic_loss(batch, generator)
        if not self.training or self._actor_step():
            loss = loss + self.actor_loss(batch)
        return loss

    def _actor_step(self) -> bool:
        return (int(self.updates) + 1) % self.policy_delay == 0

    def update_targets(self) -> None:
        if int(self.updates) % self.policy_delay == 0:  # the step that just moved the actor
            soft_update(self.critic_target, self.critic, self.tau)
            soft_update(self.actor_target, self.actor, self.tau)
