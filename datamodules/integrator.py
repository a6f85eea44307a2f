"""Uniform (x, u, x', r) data for the 2-D single integrator, excluding the env's data hole."""

from __future__ import annotations

import torch

from datamodules.base import TransitionDataModule
from sgp_lightning.envs.integrator import IntegratorEnv
from sgp_lightning.errors import require


class IntegratorDataModule(TransitionDataModule):
    def __init__(self, env: IntegratorEnv, num_samples: int = 20000, **kwargs):
        super().__init__(name=f"{env.name} dataset", **kwargs)
        require(num_samples > 0, f"num_samples must be positive, got {num_samples}")
        self.env, self.num_samples = env, num_samples

    def load_transitions(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        # Rejection sampling for the hole, drawn in one oversized batch (no per-sample loop).
        keep_fraction = 1.0 - torch.pi * self.env.hole_radius**2 / (2 * self.env.box) ** 2
        draw = int(self.num_samples / max(keep_fraction, 0.05) * 1.2) + 64
        x = self.env.sample_states(draw, generator)
        x = x[~self.env.in_hole(x)][: self.num_samples]
        require(x.shape[0] == self.num_samples, "hole too large: could not draw enough states outside it")
        u = self.env.sample_actions(self.num_samples, generator)
        return {"x": x, "u": u, "x_next": self.env.step(x, u), "r": self.env.reward(x, u)}
