"""Noise (σ) schedules for noise-conditioned score models and their annealing during planning (paper B.2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from sgp_lightning.errors import require

SCHEDULE_KINDS = ("geometric", "cosine")


class NoiseSchedule(nn.Module):
    """A strictly decreasing sequence of noise levels σ_0 > σ_1 > … > σ_{L-1} > 0.

    Level index k selects σ_k. Kept as a buffer so it moves with the model and is saved in checkpoints.
    """

    sigmas: torch.Tensor

    def __init__(self, sigmas: torch.Tensor | list[float]):
        super().__init__()
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
        require(sigmas.numel() >= 1, "a noise schedule needs at least one level")
        require(bool(torch.all(sigmas > 0)), f"noise levels must be positive, got {sigmas.tolist()[:5]}…")
        require(
            bool(torch.all(sigmas[1:] < sigmas[:-1])),
            "noise levels must be strictly decreasing (σ_max first, σ_min last); got an increasing or flat "
            f"schedule starting {[round(s, 4) for s in sigmas.tolist()[:4]]}",
        )
        self.register_buffer("sigmas", sigmas)

    @classmethod
    def geometric(
        cls, sigma_max: float = 50.0, sigma_min: float = 0.01, num_levels: int = 232
    ) -> NoiseSchedule:
        _check_range(sigma_max, sigma_min, num_levels)
        if num_levels == 1:
            return cls([sigma_max])
        return cls(
            torch.logspace(math.log10(sigma_max), math.log10(sigma_min), num_levels, dtype=torch.float64)
        )

    @classmethod
    def cosine(cls, sigma_max: float = 0.2, sigma_min: float = 0.01, num_levels: int = 10) -> NoiseSchedule:
        """σ_k = σ_min + (σ_max − σ_min)·(1 + cos(π k / (L−1))) / 2: slow at both ends, fast in the middle."""
        _check_range(sigma_max, sigma_min, num_levels)
        if num_levels == 1:
            return cls([sigma_max])
        k = torch.arange(num_levels, dtype=torch.float64)
        return cls(
            sigma_min + (sigma_max - sigma_min) * 0.5 * (1 + torch.cos(math.pi * k / (num_levels - 1)))
        )

    @classmethod
    def build(cls, kind: str, sigma_max: float, sigma_min: float, num_levels: int) -> NoiseSchedule:
        """Build from plain config values (what checkpoints store)."""
        require(kind in SCHEDULE_KINDS, f"unknown noise schedule {kind!r}; choose one of {SCHEDULE_KINDS}")
        return getattr(cls, kind)(sigma_max=sigma_max, sigma_min=sigma_min, num_levels=num_levels)

    @property
    def num_levels(self) -> int:
        return self.sigmas.numel()

    def __len__(self) -> int:
        return self.num_levels

    def level_at(self, iteration: int, iterations: int, start_level: int = 0) -> int:
        """Level used at `iteration` of `iterations` when annealing from `start_level` to the last level.

        Each of the L − start_level levels gets an equal share of the iterations (paper B.2), so the
        final iterations always run at σ_min. With fewer iterations than levels, levels are skipped evenly
        and the last iteration still runs at σ_min.
        """
        require(iterations > 0, f"iterations must be positive, got {iterations}")
        require(
            0 <= start_level < self.num_levels,
            f"start_level must be in [0, {self.num_levels - 1}] for this {self.num_levels}-level schedule, "
            f"got {start_level}",
        )
        levels = self.num_levels - start_level
        if iterations < levels:  # fewer iterations than levels: spread them so the last one is σ_min
            return start_level + (
                round(iteration * (levels - 1) / (iterations - 1)) if iterations > 1 else levels - 1
            )
        return start_level + min(levels - 1, iteration * levels // iterations)


def _check_range(sigma_max: float, sigma_min: float, num_levels: int) -> None:
    require(int(num_levels) == num_levels and num_levels >= 1, f"num_levels must be ≥ 1, got {num_levels}")
    require(sigma_min > 0, f"sigma_min must be positive, got {sigma_min}")
    require(
        sigma_max > sigma_min or (num_levels == 1 and sigma_max == sigma_min),
        f"sigma_max ({sigma_max}) must be larger than sigma_min ({sigma_min}): schedules anneal from "
        "large to small noise",
    )
