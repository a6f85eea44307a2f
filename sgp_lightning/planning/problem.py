"""Batched single-shooting problem: roll actions through the learned dynamics, score cost + penalty."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sgp_lightning.errors import require
from sgp_lightning.planning.penalties import Penalty

Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CostFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PlanResult:
    actions: torch.Tensor  # (B, T, *action_shape)
    states: torch.Tensor  # (B, T+1, *state_shape) predicted by the learned dynamics
    cost_planned: torch.Tensor  # (B,) task cost of `states` (penalty excluded)
    history: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. "cost": (iterations, B)


class ShootingProblem:
    """min_u  Σ_t cost_t(x_t, u_t) + penalty(x_{0:T−1}, u_{0:T−1}),  x_{t+1} = f(x_t, u_t), x_0 given.

    `neutral_action` (one action, e.g. zeros, or the image of u = 0) is where planners start.
    `action_scale` (broadcastable to one action, e.g. the data's action std) sets the units planners take
    their steps in: an optimiser step of lr changes an action by lr · action_scale (None: raw units).
    `action_map` (e.g. the env's `normalize_action`) turns decision variables into the actions that are
    rolled out, scored and returned.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        cost: CostFn,
        penalty: Penalty,
        horizon: int,
        neutral_action: torch.Tensor,
        action_scale: torch.Tensor | None = None,
        action_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        require(
            int(horizon) == horizon and horizon > 0,
            f"planning horizon must be a positive integer, got {horizon}",
        )
        self.dynamics, self.cost, self.penalty = dynamics, cost, penalty
        self.horizon, self.neutral_action = int(horizon), neutral_action
        self.action_scale = action_scale
        self.action_map = action_map

    def actions_of(self, decision: torch.Tensor) -> torch.Tensor:
        """The actions (B, T, …) a plan's decision variables stand for."""
        return decision if self.action_map is None else self.action_map(decision)

    def scale_like(self, actions: torch.Tensor) -> torch.Tensor:
        """The action scale on the actions' device and dtype (a scalar 1 in raw units)."""
        return actions.new_ones(()) if self.action_scale is None else self.action_scale.to(actions)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return tuple(self.neutral_action.shape)

    def neutral_plan(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, T, *action_shape) of the neutral action."""
        action = self.neutral_action.to(device=x0.device, dtype=x0.dtype)
        return action.expand(x0.shape[0], self.horizon, *self.action_shape).clone()

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """States (B, T+1, …) under already-mapped actions."""
        states = [x0]
        for t in range(actions.shape[1]):
            states.append(self.dynamics(states[-1], actions[:, t]))
        return torch.stack(states, 1)

    def objective(self, x0, goal, decision, level: int | torch.Tensor | None):
        """(objective (B,), task cost (B,), states) of decision variables: one rollout and one batched
        penalty call (or, for penalties with their own rollout, such as the ensemble's, one combined one).
        `level`: the noise level of penalties with levels, one for all rows or a (B,) tensor."""
        actions = self.actions_of(decision)
        if hasattr(self.penalty, "rollout"):
            states, penalty = self.penalty.rollout(x0, actions)
        else:
            states = self.rollout(x0, actions)
            penalty = self.penalty(states[:, :-1], actions, level)
        cost = self.cost(states, actions, goal)
        return self.penalty.task_term(cost) + penalty, cost, states


@contextlib.contextmanager
def frozen(*modules: nn.Module | None):
    """Planning differentiates through networks without training them: no parameter grads, eval mode."""
    modules = [m for m in modules if m is not None]
    saved = [(m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    try:
        for m in modules:
            m.eval().requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, (training, flags) in zip(modules, saved, strict=True):
            m.train(training)
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)
