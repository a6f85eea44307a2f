"""Ground-truth domains as batched torch code. Planning never calls these; evaluation does."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sgp_lightning.errors import require


@dataclass
class Tasks:
    """A batch of planning problems: start states (B, n) and goals (B, n)."""

    x0: torch.Tensor
    goal: torch.Tensor

    def __len__(self) -> int:
        return self.x0.shape[0]

    def select(self, index) -> Tasks:
        return Tasks(self.x0[index], self.goal[index])

    def to(self, device) -> Tasks:
        return Tasks(self.x0.to(device), self.goal.to(device))


class Env:
    """Batched true dynamics, differentiable cost and task set of one domain.

    Subclasses set `name`, `state_dim`, `action_dim`, `horizon` and implement `step`, `stage_cost`,
    `terminal_cost`, `tasks`. Costs are costs (lower is better); `reward = −stage cost` labels datasets.
    States and actions are vectors, or images of `image_shape` (C, H, W) for image domains.
    """

    name: str = "env"
    state_dim: int
    action_dim: int
    horizon: int
    image_shape: tuple[int, int, int] | None = None  # set by domains that plan over images

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state as the planner sees it."""
        return self.image_shape or (self.state_dim,)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return self.image_shape or (self.action_dim,)

    def normalize_action(self, actions: torch.Tensor) -> torch.Tensor:
        """The canonical form of proposed actions, applied by the true env and by planners before the
        learned models see them (identity unless a domain constrains its actions)."""
        return actions

    def neutral_action(self) -> torch.Tensor:
        """The action planners start from (before any initial noise): zero for vector domains."""
        return torch.zeros(self.action_shape)

    def positions(self, states: torch.Tensor) -> torch.Tensor:
        """2-D positions of states (…, 2) for plots: the first two coordinates unless overridden."""
        return states[..., :2]

    def success(self, states: torch.Tensor, goal: torch.Tensor) -> torch.Tensor | None:
        """Whether each true trajectory (B, T+1, …) solved its task, (B,) bool; None if the domain has no
        success criterion."""
        return None

    def outside_data(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor | None:
        """Per planned step, whether (x_t, u_t) (and x_T) lies outside the region the data was drawn from,
        (B, T+1) bool; None if the domain does not define that region."""
        return None

    def time_in_trap(self, states: torch.Tensor) -> torch.Tensor | None:
        """Share of a true trajectory's states (B, T+1, …) inside the domain's trap, where the true dynamics
        differ from what the data shows (the pit); None if the domain has none."""
        return None

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stage_cost(self, x: torch.Tensor, u: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def terminal_cost(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tasks(self) -> Tasks:
        raise NotImplementedError

    def reward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Reward recorded in datasets: −stage cost towards the domain's nominal goal."""
        return -self.stage_cost(x, u, self.nominal_goal().to(x).expand_as(x))

    def nominal_goal(self) -> torch.Tensor:
        raise NotImplementedError

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """True states (B, T+1, n) from x0 (B, n) under actions (B, T, m). Loops over time only."""
        require(
            actions.dim() == 2 + len(self.action_shape),
            f"actions must be (B, T, *{self.action_shape}), got shape {tuple(actions.shape)}",
        )
        states = [x0]
        for t in range(actions.shape[1]):
            states.append(self.step(states[-1], actions[:, t]))
        return torch.stack(states, 1)

    def cost(self, states: torch.Tensor, actions: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Total cost (B,) of a trajectory: Σ_t c(x_t, u_t) + c_T(x_T). Differentiable."""
        goal_t = goal.unsqueeze(1).expand_as(states[:, :-1])  # (B, T, *state_shape)
        running = self.stage_cost(states[:, :-1], actions, goal_t).sum(1)
        return running + self.terminal_cost(states[:, -1], goal)

    def draw(self, ax) -> None:
        """Draw the domain's background (data region, obstacles) on a matplotlib axis."""
