"""Shapes of states and actions: vectors (n,) or images (C, H, W), and how (x, u) pairs are joined.

Vectors join along their last axis; images along the channel axis. Normalizer statistics are per
coordinate for vectors and per channel for images (shape (C, 1, 1), broadcast over pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sgp_lightning.errors import require

Shape = tuple[int, ...]


def as_shape(shape: int | Sequence[int]) -> Shape:
    """An int n means a vector (n,); a list [C, H, W] an image."""
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    require(len(shape) in (1, 3) and all(s > 0 for s in shape), f"a shape is [n] or [C, H, W], got {shape}")
    return shape


def is_image(shape: Shape) -> bool:
    return len(shape) == 3


def feature_axis(shape: Shape) -> int:
    return -3 if is_image(shape) else -1


def stats_shape(shape: Shape) -> Shape:
    return (shape[0], 1, 1) if is_image(shape) else shape


def pair_shape(state_shape: Shape, action_shape: Shape) -> Shape:
    """Shape of the joined (x, u) pair."""
    require(
        is_image(state_shape) == is_image(action_shape) and state_shape[1:] == action_shape[1:],
        f"states {state_shape} and actions {action_shape} cannot be joined: both vectors, or images of one size",
    )
    return (state_shape[0] + action_shape[0], *state_shape[1:])


def join(x: torch.Tensor, u: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Concatenate x and u (leading batch dims alike) along the feature axis of `shape`."""
    return torch.cat([x, u], feature_axis(shape))


NORMALIZATIONS = ("zscore", "minmax")


def sample_stats(data: torch.Tensor, shape: Shape, kind: str = "zscore") -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, scale) of samples (N, *shape) in the layout Normalizer(stats_shape(shape)) expects, so that
    (v − offset) / scale is normalized: `zscore`, mean and std; `minmax`, the range's midpoint and half-width
    (the data then spans [−1, 1], as the authors' code normalises by range). Images: per channel."""
    require(kind in NORMALIZATIONS, f"normalization must be one of {NORMALIZATIONS}, got {kind!r}")
    image = is_image(shape)
    values, dim = (data.transpose(0, 1).flatten(1), 1) if image else (data, 0)  # (C, N·H·W) or (N, dim)
    if kind == "zscore":
        offset, scale = values.mean(dim), values.std(dim)
    else:
        low, high = values.amin(dim), values.amax(dim)
        offset, scale = (high + low) / 2, (high - low) / 2
    return (offset.view(-1, 1, 1), scale.view(-1, 1, 1)) if image else (offset, scale)


def feature_sum(values: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Sum over the trailing feature dims of `shape` (one vector or one image), keeping batch dims."""
    return values.sum(tuple(range(-len(shape), 0)))
