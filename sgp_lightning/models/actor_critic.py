"""What the offline-RL baselines (TD3+BC, IQL) share: a tanh actor on normalized states, twin Q critics with a
slowly following target copy, and the transitions they learn from."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch, OptimizerFactory, StateActionModel
from sgp_lightning.spaces import is_image


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    r"""
    Polyak averaging of a target network towards its online network: θ' ← (1 − τ) θ' + τ θ.

    Args:
        target (`nn.Module`):
            The target copy, updated in place.
        source (`nn.Module`):
            The online network, of the same architecture.
        tau (`float`):
            The step τ in (0, 1].
    """
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)


class ActorCriticModel(StateActionModel):
    r"""
    The shared part of TD3+BC and IQL, as SGPSystem parts trained on the same transition batches as the
    planning models: a deterministic actor `max_action · tanh(MLP(x̄))` on z-scored states x̄ (the published
    state normalisation), twin Q critics `Q_k(x̄, u)` on raw actions (one [`Ensemble`] of two MLPs, evaluated
    in one call) and their target copy, moved by [`soft_update`] after each optimiser step. Subclasses write
    `loss` and `update_targets`. `updates` (a buffer, so checkpoints and resumed runs keep it) counts the
    optimiser steps taken.

    Args:
        state_shape (`int` or `list[int]`):
            `n` or `[n]` (vector states only).
        action_shape (`int` or `list[int]`):
            `m` or `[m]` (vector actions only).
        hidden_dims (`Sequence[int]`, *optional*, defaults to `(256, 256)`):
            Hidden widths of the actor and of each critic (both papers: 2 × 256).
        activation (`str`, *optional*, defaults to `"relu"`):
            `relu`, `silu`, `tanh`, `elu` or `gelu`.
        max_action (`float`, *optional*, defaults to 1.0):
            Actions lie in [−max_action, max_action] (gymnasium MuJoCo locomotion: 1).
        discount (`float`, *optional*, defaults to 0.99):
            The discount γ in [0, 1).
        tau (`float`, *optional*, defaults to 0.005):
            The target networks' Polyak step in (0, 1].
        lr (`float`, *optional*):
            The part's own Adam learning rate, inside an SGPSystem too (where `part_lr` may still override
            it); None: the optimizer's.
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`] (used when the part is trained alone).
    """

    acts = True
    in_val_loss = False  # TD errors in reward units would swamp the planning models' losses

    def __init__(
        self,
        state_shape,
        action_shape,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        max_action: float = 1.0,
        discount: float = 0.99,
        tau: float = 0.005,
        lr: float | None = None,
        optimizer: OptimizerFactory | None = None,
    ):
        from sgp_lightning.nets import MLP, Ensemble

        super().__init__(state_shape, action_shape, optimizer)
        require(
            not is_image(self.state_shape) and not is_image(self.action_shape),
            f"model.{self.part_name} takes vector states and actions",
        )
        require(max_action > 0, f"model.{self.part_name}.max_action must be positive, got {max_action}")
        require(0 <= discount < 1, f"model.{self.part_name}.discount must be in [0, 1), got {discount}")
        require(0 < tau <= 1, f"model.{self.part_name}.tau must be in (0, 1], got {tau}")
        require(lr is None or lr > 0, f"model.{self.part_name}.lr must be positive, got {lr}")
        self.max_action, self.discount, self.tau = float(max_action), float(discount), float(tau)
        self.lr = None if lr is None else float(lr)
        self.hidden_dims, self.activation = list(hidden_dims), str(activation)
        n, m = self.state_shape[0], self.action_shape[0]
        self.actor = MLP(n, m, self.hidden_dims, self.activation)
        self.critic = Ensemble(2, lambda: MLP(n + m, 1, self.hidden_dims, self.activation))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def act_normalized(self, x_norm: torch.Tensor, actor: nn.Module | None = None) -> torch.Tensor:
        r"""
        The actor's action for z-scored states.

        Args:
            x_norm (`torch.Tensor` of shape `(…, n)`):
                States in normalized units.
            actor (`nn.Module`, *optional*):
                Another network of the actor's shape (a target copy); None: the actor.

        Returns:
            `torch.Tensor` of shape `(…, m)`: actions in the data's units, in [−max_action, max_action].
        """
        return self.max_action * torch.tanh((actor or self.actor)(x_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""
        The policy's action for each state (what PolicyPlanner acts with).

        Args:
            x (`torch.Tensor` of shape `(…, n)`):
                States in the data's units.

        Returns:
            `torch.Tensor` of shape `(…, m)`: actions in the data's units.
        """
        return self.act_normalized(self.state_norm(x))

    def q_values(self, x: torch.Tensor, u: torch.Tensor, target: bool = False) -> torch.Tensor:
        r"""
        Both critics' values.

        Args:
            x (`torch.Tensor` of shape `(B, n)`):
                States in the data's units.
            u (`torch.Tensor` of shape `(B, m)`):
                Actions in the data's units.
            target (`bool`, *optional*, defaults to `False`):
                Use the target critics.

        Returns:
            `torch.Tensor` of shape `(2, B)`: Q_1 and Q_2, in reward units.
        """
        critic = self.critic_target if target else self.critic
        return critic(torch.cat([self.state_norm(x), u], -1)).squeeze(-1)

    def bootstrap_target(self, batch: Batch, next_value: torch.Tensor) -> torch.Tensor:
        r"""
        The TD target r + γ (1 − done) V(x'), with done the fall flag (a time-limit cut is not an end).

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `r` `(B,)` and, if present, `done` `(B,)` (bool; absent: never done).
            next_value (`torch.Tensor` of shape `(B,)`):
                The value of the next state.

        Returns:
            `torch.Tensor` of shape `(B,)`: the target, without gradient.
        """
        done = batch.get("done")
        alive = 1.0 if done is None else 1.0 - done.to(next_value.dtype)
        return (batch["r"] + self.discount * alive * next_value).detach()

    def configure_optimizers(self):
        """Trained alone: the optimizer factory's optimizer, at the part's own `lr` if it has one."""
        params = [p for p in self.parameters() if p.requires_grad]
        return self.optimizer_factory(params=params, **({"lr": self.lr} if self.lr else {}))

    def update_targets(self) -> None:
        """Move the target networks after an optimiser step (`updates` already counts it)."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        self.updates += 1
        self.update_targets()
