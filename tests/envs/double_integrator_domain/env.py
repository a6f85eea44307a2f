"""1-D double integrator: a point mass pushed along a line. A domain defined only under tests/, to show that
a new domain is an `Env` subclass, a datamodule and a `conf/domain/<d>.yaml`, with no other edit. It keeps
only the settings a run changes (step length, data box, horizon, tasks); the rest are constants.

State x = (position p [m], velocity v [m/s]); action u = (force f [N]) on a unit mass. Exact zero-order-hold
step of length dt:  p' = p + dt v + ½ dt² f,  v' = v + dt f. Cost: running 0.1 ‖x‖² + 0.01 ‖u‖², terminal
‖x_T‖² (every task drives the mass to rest at the origin).
"""

from __future__ import annotations

import torch

from sgp_lightning.envs import Env, Tasks
from sgp_lightning.errors import require


class DoubleIntegratorEnv(Env):
    name = "double_integrator"
    state_dim = 2
    action_dim = 1
    state_weight, action_weight, terminal_weight = 0.1, 0.01, 1.0  # cost weights
    force_limit = 1.0  # data forces are uniform in ±1 N

    def __init__(
        self, dt: float = 0.1, box: float = 1.5, horizon: int = 20, num_tasks: int = 8, task_seed: int = 0
    ):
        """dt: step length (s); box: data positions and velocities are uniform in ±box; horizon: steps per
        task; num_tasks: tasks per batch, starting at rest with position uniform in ±box/2, seeded by task_seed."""
        require(dt > 0 and box > 0, "dt and box must be positive")
        require(horizon > 0 and num_tasks > 0, "horizon and num_tasks must be positive")
        self.dt, self.box, self.horizon = float(dt), float(box), int(horizon)
        self.num_tasks, self.task_seed = int(num_tasks), int(task_seed)
        self.goal = torch.zeros(2)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p, v = x.unbind(-1)
        a = u[..., 0]
        return torch.stack([p + self.dt * v + 0.5 * self.dt**2 * a, v + self.dt * a], -1)

    def stage_cost(self, x: torch.Tensor, u: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.state_weight * (x - goal).square().sum(-1) + self.action_weight * u.square().sum(-1)

    def terminal_cost(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.terminal_weight * (x - goal).square().sum(-1)

    def nominal_goal(self) -> torch.Tensor:
        return self.goal

    def tasks(self) -> Tasks:
        """Seeded starts at rest, position uniform in ±box/2; every task drives the mass to `goal`."""
        generator = torch.Generator().manual_seed(self.task_seed)
        position = (torch.rand(self.num_tasks, generator=generator) * 2 - 1) * self.box / 2
        x0 = torch.stack([position, torch.zeros_like(position)], -1)
        return Tasks(x0, self.goal.expand_as(x0).clone())

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 2, generator=generator) * 2 - 1) * self.box

    def sample_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 1, generator=generator) * 2 - 1) * self.force_limit
