"""Uniform (x, u, x', r) transitions of the 1-D double integrator, drawn in one seeded batch."""

from __future__ import annotations

from datamodules.base import SampledDataModule
from tests.envs.double_integrator_domain.env import DoubleIntegratorEnv


class DoubleIntegratorDataModule(SampledDataModule):
    """Draws its pairs with the env's `sample_states` / `sample_actions` and steps them with the env."""

    def __init__(self, env: DoubleIntegratorEnv, num_samples: int = 10_000, **kwargs):
        super().__init__(env, num_samples, **kwargs)
