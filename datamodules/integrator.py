"""Uniform (x, u, x', r) data for the 2-D single integrator, excluding the env's data hole."""

from __future__ import annotations

import torch

from datamodules.base import SampledDataModule, TransitionDataModule
from sgp_lightning.envs.integrator import IntegratorEnv
from sgp_lightning.errors import require


class IntegratorDataModule(SampledDataModule):
    """Uniform transitions of the integrator domains, none starting in the env's hole."""

    def __init__(self, env: IntegratorEnv, num_samples: int = 20000, **kwargs):
        super().__init__(env, num_samples, **kwargs)

    def load_transitions(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        # Rejection sampling for the hole, drawn in one oversized batch (no per-sample loop).
        keep_fraction = 1.0 - torch.pi * self.env.hole_radius**2 / (2 * self.env.box) ** 2
        draw = int(self.num_samples / max(keep_fraction, 0.05) * 1.2) + 64
        x = self.env.sample_states(draw, generator)
        x = x[~self.env.in_hole(x)][: self.num_samples]
        require(x.shape[0] == self.num_samples, "hole too large: could not draw enough states outside it")
        u = self.env.sample_actions(self.num_samples, generator)
        return self.transitions(x, u)


class DemonstrationDataModule(TransitionDataModule):
    """Straight-line demonstrations for the stitching experiment (paper E.1, Fig. 8): half go from around
    `routes[0][0]` to around `routes[0][1]`, half along `routes[1]`; each takes `steps` equal steps with
    per-step action noise. All demonstrations are drawn as one batch."""

    def __init__(
        self,
        env: IntegratorEnv,
        routes: list = (((-0.8, -0.8), (0.8, 0.8)), ((-0.8, 0.8), (0.8, -0.8))),
        num_demos: int = 200,
        steps: int = 20,
        endpoint_noise: float = 0.05,
        action_noise: float = 0.005,
        num_samples: int | None = None,
        **kwargs,
    ):
        """`num_samples`, if given, sets the number of demonstrations to num_samples // steps (transitions)."""
        super().__init__(name=f"{env.name} demonstrations", **kwargs)
        if num_samples is not None:
            num_demos = int(num_samples) // int(steps)
        require(num_demos >= 2 and steps >= 1, "num_demos must be ≥ 2 and steps ≥ 1")
        self.env, self.routes = env, torch.tensor(routes, dtype=torch.float32)  # (routes, 2 ends, 2)
        require(self.routes.shape[1:] == (2, 2), "routes must be a list of [[start x, y], [end x, y]] pairs")
        self.num_demos, self.steps = int(num_demos), int(steps)
        self.endpoint_noise, self.action_noise = float(endpoint_noise), float(action_noise)

    def load_transitions(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        route = torch.arange(self.num_demos) % len(self.routes)
        ends = self.routes[route] + self.endpoint_noise * torch.randn(
            self.num_demos, 2, 2, generator=generator
        )
        step = (ends[:, 1] - ends[:, 0]) / self.steps  # (D, 2)
        u = step[:, None, :] + self.action_noise * torch.randn(
            self.num_demos, self.steps, 2, generator=generator
        )
        x = ends[:, None, 0] + torch.cat([torch.zeros(self.num_demos, 1, 2), u.cumsum(1)[:, :-1]], 1)
        x, u = x.reshape(-1, 2), u.reshape(-1, 2)
        return {"x": x, "u": u, "x_next": self.env.step(x, u), "r": self.env.reward(x, u)}
