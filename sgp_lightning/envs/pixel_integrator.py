"""Pixel single integrator (paper C.3, Fig. 3): a 2-D integrator seen and driven through 32×32 images.

Hidden state x ∈ R², true dynamics x' = x + u. The observation y is a grayscale image of a dot at x whose
intensities sum to 1; the action is an image û, and the control it applies is its spatial average
u = Σ_p g_u(p) û(p) (eq. 44). States are read back from images the same way, x = Σ_p g_im(p) y(p) (eq. 46).
Both averages are linear, exactly as in the paper, so a planned image is scored by what it encodes and
not by whether it looks like a dot; a data image (a dot) encodes its point exactly. An action image is
normalized to unit total intensity before it acts (`normalize_action`, C.3: "normalized such that its
overall intensity sums to 1"), so the true control never leaves the grid whatever image is proposed.
Planners apply the same map before the learned models see a plan unless `planner.normalize_actions` is
false; the pixel experiments set it false, as in the paper, so a plan can feed the models images unlike
any in the data (scaled, with negative lobes) and vanilla MBRL exploits them.

Pixel grids: g_im spans [−state_extent, state_extent]² and g_u spans [−action_extent, action_extent]², both
wider than the data ranges (x ∈ [−1, 1]², u ∈ [−0.2, 0.2]²) so a rendered dot is never cut at the border
and render → extract is exact to float precision. The true state is kept inside ±wall so that holds for
every rollout. Image row 0 is the bottom edge (y increases with the row index; plot with origin="lower").
"""

from __future__ import annotations

import math

import torch

from sgp_lightning.envs.base import Env, Tasks
from sgp_lightning.errors import require


class PixelIntegratorEnv(Env):
    state_dim = 2  # the hidden state; the planner's states and actions are images of `image_shape`
    action_dim = 2

    def __init__(
        self,
        name: str = "pixel_integrator",
        image_size: int = 32,
        state_extent: float = 1.5,
        action_extent: float = 0.3,
        dot_std_pixels: float = 1.0,
        wall: float = 1.2,
        state_box: float = 1.0,
        action_limit: float = 0.2,
        horizon: int = 15,
        state_weight: float = 500.0,
        terminal_weight: float = 1000.0,
        action_weight: float = 6.5,
        num_tasks: int = 8,
        task_distance: float = 0.5,
        goal_box: float = 0.4,
        task_seed: int = 0,
    ):
        require(image_size >= 4, f"image_size must be ≥ 4, got {image_size}")
        require(state_extent > 0 and action_extent > 0, "state_extent and action_extent must be positive")
        require(dot_std_pixels > 0, f"dot_std_pixels must be positive, got {dot_std_pixels}")
        require(0 < state_box <= wall < state_extent, "need 0 < state_box ≤ wall < state_extent")
        require(0 < action_limit < action_extent, "need 0 < action_limit < action_extent")
        require(horizon > 0, f"horizon must be positive, got {horizon}")
        require(num_tasks > 0, f"num_tasks must be positive, got {num_tasks}")
        require(
            goal_box + task_distance <= state_box, "tasks must lie in the data box: goal_box + task_distance"
        )
        self.name = name
        self.image_size = int(image_size)
        self.image_shape = (1, self.image_size, self.image_size)
        self.state_extent, self.action_extent = float(state_extent), float(action_extent)
        self.dot_std_pixels, self.wall = float(dot_std_pixels), float(wall)
        self.state_box, self.action_limit = float(state_box), float(action_limit)
        self.horizon = int(horizon)
        self.state_weight, self.terminal_weight = float(state_weight), float(terminal_weight)
        self.action_weight = float(action_weight)
        self.num_tasks, self.task_distance = int(num_tasks), float(task_distance)
        self.goal_box, self.task_seed = float(goal_box), int(task_seed)

    # ---------------------------------------------------------------- pixel grids (g_im, g_u)
    def _axis(self, extent: float, like: torch.Tensor) -> torch.Tensor:
        return torch.linspace(-extent, extent, self.image_size, device=like.device, dtype=like.dtype)

    def _render(self, points: torch.Tensor, extent: float) -> torch.Tensor:
        """(…, 2) points → (…, 1, S, S) Gaussian dots with unit total intensity (separable, batched)."""
        axis = self._axis(extent, points)
        std = self.dot_std_pixels * (axis[1] - axis[0])
        weights = torch.exp(-0.5 * ((axis - points.unsqueeze(-1)) / std) ** 2)  # (…, 2, S)
        weights = weights / weights.sum(-1, keepdim=True)
        image = weights[..., 1, :, None] * weights[..., 0, None, :]  # rows ↔ coordinate 1, cols ↔ 0
        return image.unsqueeze(-3)

    def _extract(self, images: torch.Tensor, extent: float) -> torch.Tensor:
        """(…, 1, S, S) → (…, 2): the linear spatial average Σ_p g(p) image(p) of eq. 44/46."""
        axis = self._axis(extent, images)
        image = images.squeeze(-3)
        return torch.stack([(image.sum(-2) * axis).sum(-1), (image.sum(-1) * axis).sum(-1)], -1)

    def render_state(self, x: torch.Tensor) -> torch.Tensor:
        return self._render(x, self.state_extent)

    def render_action(self, u: torch.Tensor) -> torch.Tensor:
        return self._render(u, self.action_extent)

    def extract_state(self, y: torch.Tensor) -> torch.Tensor:
        return self._extract(y, self.state_extent)

    def extract_action(self, u_image: torch.Tensor) -> torch.Tensor:
        return self._extract(u_image, self.action_extent)

    def positions(self, states: torch.Tensor) -> torch.Tensor:
        return self.extract_state(states)

    def normalize_action(self, u_image: torch.Tensor) -> torch.Tensor:
        """Intensities are non-negative and sum to 1: max(û, 0) / Σ_p max(û(p), 0). So the control is a
        weighted mean of the grid g_u and stays inside it, whatever image is proposed."""
        intensity = u_image.clamp_min(0)
        return intensity / intensity.sum((-1, -2, -3), keepdim=True).clamp_min(1e-6)

    # ---------------------------------------------------------------- Env interface
    def step(self, y: torch.Tensor, u_image: torch.Tensor) -> torch.Tensor:
        x = self.extract_state(y) + self.extract_action(self.normalize_action(u_image))
        return self.render_state(x.clamp(-self.wall, self.wall))

    def stage_cost(self, y: torch.Tensor, u_image: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        error = self.extract_state(y) - self.extract_state(goal)
        u = self.extract_action(self.normalize_action(u_image))
        return self.state_weight * error.square().sum(-1) + self.action_weight * u.square().sum(-1)

    def terminal_cost(self, y: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.terminal_weight * (self.extract_state(y) - self.extract_state(goal)).square().sum(-1)

    def nominal_goal(self) -> torch.Tensor:
        return self.render_state(torch.zeros(2))

    def neutral_action(self) -> torch.Tensor:
        """The data's image of u = 0 (a centred dot): where planners start."""
        return self.render_action(torch.zeros(2))

    def tasks(self) -> Tasks:
        """Seeded goals in [−goal_box, goal_box]², starts `task_distance` away at evenly spaced angles."""
        generator = torch.Generator().manual_seed(self.task_seed)
        goals = (torch.rand(self.num_tasks, 2, generator=generator) * 2 - 1) * self.goal_box
        angles = 2 * math.pi * (torch.arange(self.num_tasks) + 0.5) / self.num_tasks
        starts = goals + self.task_distance * torch.stack([angles.cos(), angles.sin()], -1)
        return Tasks(self.render_state(starts), self.render_state(goals))

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 2, generator=generator) * 2 - 1) * self.state_box

    def sample_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 2, generator=generator) * 2 - 1) * self.action_limit

    def hidden_step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The true dynamics on hidden states (used to label data without rendering it)."""
        return (x + u).clamp(-self.wall, self.wall)

    def hidden_reward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """−stage cost towards the nominal goal (the origin), on hidden states."""
        return -(self.state_weight * x.square().sum(-1) + self.action_weight * u.square().sum(-1))

    def draw(self, ax) -> None:
        from matplotlib.patches import Rectangle

        b = self.state_box
        ax.add_patch(Rectangle((-b, -b), 2 * b, 2 * b, fill=False, ec="tab:red", lw=1))
        ax.set_xlim(-self.wall, self.wall)
        ax.set_ylim(-self.wall, self.wall)
        ax.set_aspect("equal")
