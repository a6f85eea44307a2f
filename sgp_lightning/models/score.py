"""Noise-conditioned score s_θ(z, k) ≈ ∇_z log p_σk(z) of normalized (x, u) pairs (paper §3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sgp_lightning.models.base import Batch, OptimizerFactory, PartModel
from sgp_lightning.nets import NoiseConditionedMLP
from sgp_lightning.normalization import Normalizer
from sgp_lightning.schedules import NoiseSchedule


class ScoreModel(PartModel):
    """Denoising score matching (eq. 10) with one random level per sample: loss = ‖σ·s(z + σε) + ε‖²."""

    part_name = "score"

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int] = (512, 512, 512),
        activation: str = "silu",
        schedule: str = "geometric",
        sigma_max: float = 0.3,
        sigma_min: float = 0.02,
        num_levels: int = 10,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.schedule = NoiseSchedule.build(schedule, sigma_max, sigma_min, num_levels)
        self.pair_norm = Normalizer(state_dim + action_dim)
        self.net = NoiseConditionedMLP(
            state_dim + action_dim, self.schedule.sigmas, list(hidden_dims), activation
        )

    @property
    def dim(self) -> int:
        return self.pair_norm.shape[0]

    def set_normalizers(self, stats) -> None:
        self.pair_norm.set_stats(*stats["xu"])

    def normalize_pair(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.pair_norm(torch.cat([x, u], -1))

    def forward(self, z: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        """∇_z log p_σ(z) in normalized space, σ = schedule.sigmas[level]."""
        return self.net(z, level)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.normalize_pair(batch["x"], batch["u"])
        level = torch.randint(0, self.schedule.num_levels, z.shape[:1], device=z.device, generator=generator)
        noise = torch.randn(z.shape, device=z.device, generator=generator, dtype=z.dtype)
        sigma = self.schedule.sigmas[level].unsqueeze(-1)
        return (sigma * self(z + sigma * noise, level) + noise).square().sum(-1).mean()
