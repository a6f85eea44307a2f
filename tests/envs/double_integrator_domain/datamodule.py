"""Uniform (x, u, x', r) transitions of the 1-D double integrator, drawn in one seeded batch."""

from __future__ import annotations

import torch

from datamodules.base import TransitionDataModule
from sgp_lightning.errors import require
from tests.envs.double_integrator_domain.env import DoubleIntegratorEnv


class DoubleIntegratorDataModule(TransitionDataModule):
    def __init__(self, env: DoubleIntegratorEnv, num_samples: int = 10_000, **kwargs):
        super().__init__(name=f"{env.name} dataset", **kwargs)
        require(num_samples > 0, f"num_samples must be positive, got {num_samples}")
        self.env, self.num_samples = env, int(num_samples)

    def load_transitions(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        x = self.env.sample_states(self.num_samples, generator)
        u = self.env.sample_actions(self.num_samples, generator)
        return {"x": x, "u": u, "x_next": self.env.step(x, u), "r": self.env.reward(x, u)}
