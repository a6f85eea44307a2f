"""2-D single integrator x' = x + u (paper D.1.3, E.2), with an optional pit and an optional data hole.

- pit: inside a disc the actuation is lost, x' = x (the true dynamics stall there).
- hole: a disc where the data collector never goes (the dataset excludes states inside it).
The paper's pit experiment (Fig. 5) has both on the same disc: the model never saw the pit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sgp_lightning.envs.base import Env, Tasks
from sgp_lightning.errors import require


class IntegratorEnv(Env):
    state_dim = 2
    action_dim = 2

    def __init__(
        self,
        name: str = "integrator",
        box: float = 1.0,
        action_limit: float = 0.1,
        pit_center: Sequence[float] = (0.0, 0.0),
        pit_radius: float = 0.0,
        hole_center: Sequence[float] = (0.0, 0.0),
        hole_radius: float = 0.0,
        horizon: int = 30,
        state_weight: float = 0.01,
        action_weight: float = 0.1,
        terminal_weight: float = 0.2,
        goal: Sequence[float] = (0.8, 0.0),
        start_x: float = -0.8,
        start_y_range: Sequence[float] = (-0.3, 0.3),
        num_tasks: int = 8,
        task_seed: int | None = None,
    ):
        require(horizon > 0, f"horizon must be positive, got {horizon}")
        require(box > 0 and action_limit > 0, "box and action_limit must be positive")
        require(pit_radius >= 0 and hole_radius >= 0, "pit_radius and hole_radius must be ≥ 0")
        require(num_tasks > 0, f"num_tasks must be positive, got {num_tasks}")
        self.name = name
        self.box = float(box)
        self.action_limit = float(action_limit)
        self.pit_center = torch.tensor(list(pit_center), dtype=torch.float32)
        self.pit_radius = float(pit_radius)
        self.hole_center = torch.tensor(list(hole_center), dtype=torch.float32)
        self.hole_radius = float(hole_radius)
        self.horizon = int(horizon)
        self.state_weight, self.action_weight = float(state_weight), float(action_weight)
        self.terminal_weight = float(terminal_weight)
        self.goal = torch.tensor(list(goal), dtype=torch.float32)
        self.start_x = float(start_x)
        self.start_y_range = tuple(float(v) for v in start_y_range)
        self.num_tasks = int(num_tasks)
        self.task_seed = None if task_seed is None else int(task_seed)

    def in_pit(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pit_center.to(x)).norm(dim=-1) < self.pit_radius

    def in_hole(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.hole_center.to(x)).norm(dim=-1) < self.hole_radius

    def outside_data(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor | None:
        """Planned states inside the hole, where the data collector never went (B, T+1)."""
        return self.in_hole(states) if self.hole_radius > 0 else None

    def time_in_trap(self, states: torch.Tensor) -> torch.Tensor | None:
        """Share of the true states inside the pit, where actuation is lost."""
        return self.in_pit(states).float().mean(-1) if self.pit_radius > 0 else None

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.pit_radius == 0:
            return x + u
        return torch.where(self.in_pit(x).unsqueeze(-1), x, x + u)

    def stage_cost(self, x, u, goal):
        return self.state_weight * (x - goal).square().sum(-1) + self.action_weight * u.square().sum(-1)

    def terminal_cost(self, x, goal):
        return self.terminal_weight * (x - goal).square().sum(-1)

    def nominal_goal(self) -> torch.Tensor:
        return self.goal

    def tasks(self) -> Tasks:
        """Starts at x = start_x with y evenly spaced over start_y_range (task_seed None: the tables' tasks),
        or drawn uniformly from it with generator seed `task_seed` (tuning tasks, another set)."""
        if self.task_seed is None:
            y = torch.linspace(*self.start_y_range, self.num_tasks)
        else:
            low, high = self.start_y_range
            unit = torch.rand(self.num_tasks, generator=torch.Generator().manual_seed(self.task_seed))
            y = low + (high - low) * unit
        x0 = torch.stack([torch.full_like(y, self.start_x), y], -1)
        return Tasks(x0, self.goal.expand_as(x0).clone())

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 2, generator=generator) * 2 - 1) * self.box

    def sample_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 2, generator=generator) * 2 - 1) * self.action_limit

    def draw(self, ax) -> None:
        import matplotlib.patches as patches

        b = self.box
        ax.add_patch(
            patches.Rectangle((-b, -b), 2 * b, 2 * b, fill=False, ec="tab:red", lw=1, label="data box")
        )
        if self.hole_radius > 0:
            ax.add_patch(
                patches.Circle(
                    self.hole_center.tolist(), self.hole_radius, fc="0.85", ec="0.5", label="no data"
                )
            )
        if self.pit_radius > 0:
            ax.add_patch(
                patches.Circle(
                    self.pit_center.tolist(),
                    self.pit_radius,
                    fill=False,
                    ec="k",
                    ls=":",
                    hatch="//",
                    label="pit",
                )
            )
        ax.plot(*self.goal.tolist(), marker="*", ms=14, color="gold", mec="k", ls="none", label="goal")
        ax.set_xlim(-1.15 * b, 1.15 * b)
        ax.set_ylim(-1.15 * b, 1.15 * b)
        ax.set_aspect("equal")
