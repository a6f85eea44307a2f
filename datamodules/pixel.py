"""Pixel single integrator data (paper C.3): uniform hidden (x, u), rendered to images per batch.

Transitions are stored as hidden 2-D vectors (x, u, x'), 24 bytes each, and rendered to (y, û, y') images
on the batch's device after transfer, so N = 200,000 never becomes 2.4 GB of float32 pixels.
"""

from __future__ import annotations

import torch

from datamodules.base import SampledDataModule
from sgp_lightning.envs.pixel_integrator import PixelIntegratorEnv
from sgp_lightning.errors import require


class PixelDataModule(SampledDataModule):
    """Uniform hidden transitions of the pixel integrator, rendered to images per batch; `stats_samples`
    rendered training transitions give the normalization statistics."""

    def __init__(
        self, env: PixelIntegratorEnv, num_samples: int = 200_000, stats_samples: int = 20_000, **kwargs
    ):
        super().__init__(env, num_samples, **kwargs)
        require(stats_samples > 1, f"stats_samples must be > 1, got {stats_samples}")
        self.stats_samples = int(stats_samples)

    def transitions(self, x: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """The hidden 2-D transitions (x, u, x', r) of hidden pairs (N, 2), rendered later per batch."""
        return {"x": x, "u": u, "x_next": self.env.hidden_step(x, u), "r": self.env.hidden_reward(x, u)}

    def render(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hidden vectors → the images the models train on (r is kept as is)."""
        return {
            "x": self.env.render_state(batch["x"]),
            "u": self.env.render_action(batch["u"]),
            "x_next": self.env.render_state(batch["x_next"]),
            "r": batch["r"],
        }

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.render(batch)

    def compute_stats(self, data: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The base statistics of a rendered subset of the (already shuffled) training split."""
        return super().compute_stats(self.render({k: v[: self.stats_samples] for k, v in data.items()}))
