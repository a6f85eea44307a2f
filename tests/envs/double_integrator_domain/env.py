"""1-D double integrator: a point mass pushed along a line. A domain defined only under tests/, to show that
a new domain is an `Env` subclass, a datamodule and a `conf/domain/<d>.yaml`, with no other edit.

State x = (position p [m], velocity v [m/s]); action u = (force f [N]). Exact zero-order-hold step of length
dt for mass m:  p' = p + dt v + ½ dt² f / m,  v' = v + dt f / m. Cost: running
state_weight ‖x − goal‖² + action_weight ‖u‖², terminal terminal_weight ‖x_T − goal‖².
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sgp_lightning.envs import Env, Tasks
from sgp_lightning.errors import require


class DoubleIntegratorEnv(Env):
    state_dim = 2
    action_dim = 1

    def __init__(
        self,
        name: str = "double_integrator",
        dt: float = 0.1,
        mass: float = 1.0,
        position_limit: float = 1.5,
        velocity_limit: float = 1.5,
        force_limit: float = 1.0,
        horizon: int = 20,
        state_weight: float = 0.1,
        action_weight: float = 0.01,
        terminal_weight: float = 1.0,
        goal: Sequence[float] = (0.0, 0.0),
        start_range: float = 1.0,
        num_tasks: int = 8,
        task_seed: int = 0,
    ):
        require(dt > 0 and mass > 0, "dt and mass must be positive")
        require(min(position_limit, velocity_limit, force_limit) > 0, "the data box limits must be positive")
        require(horizon > 0 and num_tasks > 0, "horizon and num_tasks must be positive")
        self.name, self.dt, self.mass = name, float(dt), float(mass)
        self.position_limit, self.velocity_limit = float(position_limit), float(velocity_limit)
        self.force_limit, self.horizon = float(force_limit), int(horizon)
        self.state_weight, self.action_weight = float(state_weight), float(action_weight)
        self.terminal_weight = float(terminal_weight)
        self.goal = torch.tensor(list(goal), dtype=torch.float32)
        require(self.goal.shape == (2,), f"goal must be (position, velocity), got {list(goal)}")
        self.start_range, self.num_tasks, self.task_seed = float(start_range), int(num_tasks), int(task_seed)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p, v = x.unbind(-1)
        a = u[..., 0] / self.mass
        return torch.stack([p + self.dt * v + 0.5 * self.dt**2 * a, v + self.dt * a], -1)

    def stage_cost(self, x: torch.Tensor, u: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.state_weight * (x - goal).square().sum(-1) + self.action_weight * u.square().sum(-1)

    def terminal_cost(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.terminal_weight * (x - goal).square().sum(-1)

    def nominal_goal(self) -> torch.Tensor:
        return self.goal

    def tasks(self) -> Tasks:
        """Seeded starts at rest, position uniform in ±start_range; every task drives the mass to `goal`."""
        generator = torch.Generator().manual_seed(self.task_seed)
        position = (torch.rand(self.num_tasks, generator=generator) * 2 - 1) * self.start_range
        x0 = torch.stack([position, torch.zeros_like(position)], -1)
        return Tasks(x0, self.goal.expand_as(x0).clone())

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        limits = torch.tensor([self.position_limit, self.velocity_limit])
        return (torch.rand(n, 2, generator=generator) * 2 - 1) * limits

    def sample_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 1, generator=generator) * 2 - 1) * self.force_limit
