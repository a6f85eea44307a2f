"""Cart-pole swing-up (paper C.1): the cart-pole of Underactuated Robotics ch. 3.2, batched in torch.

State (x, θ, ẋ, θ̇) with θ = 0 hanging down and θ = π upright; action: the horizontal force f on the cart.

    ẍ = [f + m_p sin θ (l θ̇² + g cos θ)] / (m_c + m_p sin² θ)
    θ̈ = [−f cos θ − m_p l θ̇² cos θ sin θ − (m_c + m_p) g sin θ] / (l (m_c + m_p sin² θ))

integrated with the explicit midpoint rule (RK2). The cart's actuator saturates at ±force_limit (by default
the data's action range, ±80 N): the true system never applies a force the data never saw, while a learned
model extrapolates beyond it; planners are not told (they must stay near the data to be right). Cost (eq. 42): only the terminal ‖x_T − x_g‖²_Q with
Q = diag(1, 1, 0.1, 0.1) and x_g = (0, π, 0, 0). The data box is the region the dataset was drawn from
(the paper's red box); plots show it in the (θ, θ̇) phase plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sgp_lightning.envs.base import Env, Tasks
from sgp_lightning.errors import require


class CartPoleEnv(Env):
    state_dim = 4
    action_dim = 1

    def __init__(
        self,
        name: str = "cartpole",
        cart_mass: float = 10.0,
        pole_mass: float = 1.0,
        pole_length: float = 0.5,
        gravity: float = 9.81,
        dt: float = 0.05,
        horizon: int = 60,
        state_low: Sequence[float] = (-5.0, -math.pi, -8.0, -12.0),
        state_high: Sequence[float] = (5.0, 1.5 * math.pi, 8.0, 12.0),
        action_limit: float = 80.0,
        terminal_weights: Sequence[float] = (1.0, 1.0, 0.1, 0.1),
        goal: Sequence[float] = (0.0, math.pi, 0.0, 0.0),
        start_position_range: float = 0.5,
        start_angle_range: float = 0.3,
        num_tasks: int = 8,
        task_seed: int = 0,
        success_cost: float = 0.1,
        force_limit: float | None = 80.0,
    ):
        require(min(cart_mass, pole_mass, pole_length, dt) > 0, "masses, pole_length and dt must be positive")
        require(horizon > 0, f"horizon must be positive, got {horizon}")
        require(num_tasks > 0, f"num_tasks must be positive, got {num_tasks}")
        require(action_limit > 0, f"action_limit must be positive, got {action_limit}")
        self.name = name
        self.cart_mass, self.pole_mass, self.pole_length = (
            float(cart_mass),
            float(pole_mass),
            float(pole_length),
        )
        self.gravity, self.dt, self.horizon = float(gravity), float(dt), int(horizon)
        self.state_low = torch.tensor(list(state_low), dtype=torch.float32)
        self.state_high = torch.tensor(list(state_high), dtype=torch.float32)
        require(
            self.state_low.shape == (4,) and bool(torch.all(self.state_low < self.state_high)),
            f"state_low/state_high must be 4 values with low < high, got {list(state_low)}, {list(state_high)}",
        )
        self.action_limit = float(action_limit)
        self.terminal_weights = torch.tensor(list(terminal_weights), dtype=torch.float32)
        self.goal = torch.tensor(list(goal), dtype=torch.float32)
        self.start_position_range, self.start_angle_range = (
            float(start_position_range),
            float(start_angle_range),
        )
        self.num_tasks, self.task_seed = int(num_tasks), int(task_seed)
        self.success_cost = float(success_cost)
        require(force_limit is None or force_limit > 0, f"force_limit must be > 0 or null, got {force_limit}")
        self.force_limit = None if force_limit is None else float(force_limit)

    # ------------------------------------------------------------------ dynamics
    def derivatives(self, state: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
        """d/dt (x, θ, ẋ, θ̇) for states (…, 4) and forces (…, 1)."""
        _, theta, x_dot, theta_dot = state.unbind(-1)
        f = force[..., 0]
        mc, mp, length, g = self.cart_mass, self.pole_mass, self.pole_length, self.gravity
        sin, cos = torch.sin(theta), torch.cos(theta)
        denominator = mc + mp * sin.square()
        x_ddot = (f + mp * sin * (length * theta_dot.square() + g * cos)) / denominator
        theta_ddot = (-f * cos - mp * length * theta_dot.square() * cos * sin - (mc + mp) * g * sin) / (
            length * denominator
        )
        return torch.stack([x_dot, theta_dot, x_ddot, theta_ddot], -1)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Explicit midpoint (RK2) step of length dt, with the force saturated at ±force_limit."""
        if self.force_limit is not None:
            u = u.clamp(-self.force_limit, self.force_limit)
        midpoint = x + 0.5 * self.dt * self.derivatives(x, u)
        return x + self.dt * self.derivatives(midpoint, u)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Total mechanical energy (…,), conserved without input (up to the integrator's error)."""
        _, theta, x_dot, theta_dot = x.unbind(-1)
        mc, mp, length, g = self.cart_mass, self.pole_mass, self.pole_length, self.gravity
        kinetic = 0.5 * (mc + mp) * x_dot.square() + mp * x_dot * theta_dot * length * torch.cos(theta)
        kinetic = kinetic + 0.5 * mp * length**2 * theta_dot.square()
        return kinetic - mp * g * length * torch.cos(theta)

    # ------------------------------------------------------------------ cost and tasks
    def stage_cost(self, x, u, goal):
        return x.new_zeros(x.shape[:-1])  # eq. 42: terminal cost only

    def terminal_cost(self, x, goal):
        return ((x - goal).square() * self.terminal_weights.to(x)).sum(-1)

    def success(self, states: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Swung up: terminal cost ≤ success_cost (0.1 allows e.g. an angle error of 0.3 rad alone)."""
        return self.terminal_cost(states[:, -1], goal) <= self.success_cost

    def nominal_goal(self) -> torch.Tensor:
        return self.goal

    def tasks(self) -> Tasks:
        """Seeded start states at rest around the bottom: |x| ≤ start_position_range, |θ| ≤ start_angle_range."""
        generator = torch.Generator().manual_seed(self.task_seed)
        unit = torch.rand(self.num_tasks, 2, generator=generator) * 2 - 1
        x0 = torch.zeros(self.num_tasks, 4)
        x0[:, 0] = unit[:, 0] * self.start_position_range
        x0[:, 1] = unit[:, 1] * self.start_angle_range
        return Tasks(x0, self.goal.expand_as(x0).clone())

    # ------------------------------------------------------------------ data box
    def in_box(self, x: torch.Tensor) -> torch.Tensor:
        """Whether states (…, 4) lie in the data box."""
        return ((x >= self.state_low.to(x)) & (x <= self.state_high.to(x))).all(-1)

    def outside_data(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """x_t outside the box, or a force beyond the data's ±action_limit (the last step: x_T only)."""
        outside = ~self.in_box(states)
        outside[:, :-1] |= (actions.abs() > self.action_limit).any(-1)
        return outside

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.state_low + torch.rand(n, 4, generator=generator) * (self.state_high - self.state_low)

    def sample_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 1, generator=generator) * 2 - 1) * self.action_limit

    # ------------------------------------------------------------------ plots: the (θ, θ̇) phase plane
    def positions(self, states: torch.Tensor) -> torch.Tensor:
        return states[..., [1, 3]]

    def draw(self, ax) -> None:
        import matplotlib.patches as patches

        low, high = self.state_low[[1, 3]].tolist(), self.state_high[[1, 3]].tolist()
        ax.add_patch(
            patches.Rectangle(
                low, high[0] - low[0], high[1] - low[1], fill=False, ec="tab:red", lw=1.2, label="data box"
            )
        )
        ax.plot(float(self.goal[1]), float(self.goal[3]), marker="*", ms=14, color="gold", mec="k", ls="none")
        margin = 0.35 * (high[1] - low[1])
        ax.set_xlim(low[0] - 0.5, high[0] + 0.5)
        ax.set_ylim(low[1] - margin, high[1] + margin)
        ax.set_xlabel("θ (rad)")
        ax.set_ylabel("θ̇ (rad/s)")
