"""Affine normalizer whose statistics are module buffers, so every checkpoint carries them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sgp_lightning.errors import require


class Normalizer(nn.Module):
    """z = (x − mean) / std over trailing `shape`; identity until `fit` or `set_stats` is called."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, shape: int | Sequence[int], eps: float = 1e-6):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.eps = eps
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> Normalizer:
        """Statistics over the leading (sample) dimension of `data`."""
        require(data.shape[0] > 1, "need at least two samples to fit a normalizer")
        return self.set_stats(data.mean(0), data.std(0))

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> Normalizer:
        require(
            tuple(mean.shape) == tuple(self.mean.shape), f"mean shape {tuple(mean.shape)} != {self.shape}"
        )
        require(
            bool(torch.isfinite(mean).all() & torch.isfinite(std).all()), "normalizer stats are not finite"
        )
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(self.eps))
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    normalize = forward

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def scale(self, dz: torch.Tensor) -> torch.Tensor:
        """Map a displacement (no offset) from normalized to raw units."""
        return dz * self.std

    def matches(self, other: Normalizer, atol: float = 1e-5) -> bool:
        return (
            self.shape == other.shape
            and torch.allclose(self.mean.cpu(), other.mean.cpu(), atol=atol)
            and torch.allclose(self.std.cpu(), other.std.cpu(), atol=atol)
        )
