"""Data-distance estimator (paper C.1, eq. 43): a σ-conditioned network regressing the smoothed distance to
data, so zeroth-order planners (CEM) can penalise distance to data with a value, not only a gradient.

Targets are the exact streamed softmin of the core library (`sgp_lightning.distance.smoothed_distance_sq`) over a
reference set of normalized training pairs (x, u):  d_σ(z)² = −σ² log Σ_i exp(−‖z − z_i‖² / 2σ²).
Each target needs a pass over the whole reference set, which is what makes this estimator costly to train
(the paper's point); `reference_size` bounds that cost by using a seeded subset (null: every training pair)
and `queries_per_step` by using only part of each batch as anchors (null: all of it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sgp_lightning.distance import smoothed_distance_sq
from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch, OptimizerFactory, PairModel
from sgp_lightning.nets import NoiseConditionedMLP
from sgp_lightning.spaces import is_image, join


class DistanceEstimator(PairModel):
    r"""
    d̂_σk(z)² = σ_k² · g(z, k), trained with eq. 43:  E |g(z, k) − d_σk(z)² / σ_k²|  (the 1/σ² weighted
    absolute error), over queries z drawn near the data (data + σ_k noise) and uniformly over the data's
    normalized bounding box widened by `margin` (the domain Ω of eq. 43). Vector domains only.

    Args:
        state_shape, action_shape (`int` or `list[int]`):
            `[n]` and `[m]` (vector domains only).
        hidden_dims (`Sequence[int]`, *optional*, defaults to `(256, 256, 256)`):
            Hidden layer widths of g, a noise-conditioned MLP with one output.
        activation (`str`, *optional*, defaults to `"silu"`):
            g's activation.
        schedule, sigma_max, sigma_min, num_levels (*optional*, defaults to `"geometric"`, 1.0, 0.05, 10):
            The noise levels σ_k (normalized units) the estimator is conditioned on, as in [`ScoreModel`].
        reference_size (`int`, *optional*, defaults to 50000):
            How many training pairs (a seeded subset) the targets are measured to; `None`: all of them.
        queries_per_step (`int`, *optional*):
            Anchors per training step (the first of the batch); `None`: the whole batch.
        uniform_fraction (`float`, *optional*, defaults to 0.5):
            Share of the queries drawn uniformly over Ω (the rest near the anchors), in [0, 1].
        margin (`float`, *optional*, defaults to 1.0):
            How far Ω extends beyond the reference data's bounding box, in normalized units.
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`].
    """

    part_name = "distance"
    reference: torch.Tensor

    def __init__(
        self,
        state_shape,
        action_shape,
        hidden_dims: Sequence[int] = (256, 256, 256),
        activation: str = "silu",
        schedule: str = "geometric",
        sigma_max: float = 1.0,
        sigma_min: float = 0.05,
        num_levels: int = 10,
        reference_size: int | None = 50_000,
        queries_per_step: int | None = None,
        uniform_fraction: float = 0.5,
        margin: float = 1.0,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(state_shape, action_shape, schedule, sigma_max, sigma_min, num_levels, optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        require(
            not is_image(self.pair_shape),
            f"the distance estimator takes vector (x, u) pairs, got shape {self.pair_shape}",
        )
        require(
            reference_size is None or reference_size > 0,
            f"reference_size must be > 0 or null, got {reference_size}",
        )
        require(
            queries_per_step is None or queries_per_step > 0,
            f"queries_per_step must be > 0 or null, got {queries_per_step}",
        )
        self.queries_per_step = queries_per_step
        require(0 <= uniform_fraction <= 1, f"uniform_fraction must be in [0, 1], got {uniform_fraction}")
        require(margin >= 0, f"margin must be ≥ 0, got {margin}")
        self.reference_size, self.uniform_fraction, self.margin = (
            reference_size,
            float(uniform_fraction),
            float(margin),
        )
        self.net = NoiseConditionedMLP(
            self.pair_shape[0],
            self.schedule.sigmas,
            list(hidden_dims),
            activation,
            out_dim=1,
            divide_by_sigma=False,
        )
        # Normalized training pairs the targets are computed against: rebuilt from the data for training,
        # never saved (a checkpoint plans without them).
        self.register_buffer("reference", torch.zeros(0, self.pair_shape[0]), persistent=False)

    def set_data(self, datamodule) -> None:
        """The normalizer statistics, and the reference pairs from the training split (seeded subset)."""
        super().set_data(datamodule)
        self.draw_reference(datamodule)

    def draw_reference(self, datamodule) -> None:
        """The reference pairs from the datamodule's training split, the seeded subset training draws; also
        for an estimator loaded from a checkpoint, which does not hold them."""
        self.set_reference(datamodule.train_data, seed=getattr(datamodule, "seed", 0))

    def set_reference(self, data: dict[str, torch.Tensor], seed: int = 0) -> None:
        r"""
        Use (a seeded subset of) these training pairs as the data the distance is measured to.

        Args:
            data (`dict[str, torch.Tensor]`):
                Transitions in the data's units; reads `x` `(N, n)` and `u` `(N, m)`.
            seed (`int`, *optional*, defaults to 0):
                Seed of the subset, when `N > reference_size`.
        """
        pairs = self.pair_norm(join(data["x"], data["u"], self.state_shape))
        if self.reference_size is not None and pairs.shape[0] > self.reference_size:
            keep = torch.randperm(pairs.shape[0], generator=torch.Generator().manual_seed(seed))[
                : self.reference_size
            ]
            pairs = pairs[keep]
        self.reference = pairs.detach().to(self.reference.device)

    def forward(self, z: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        r"""
        The predicted squared smoothed distance d̂_σ(z)² to the data.

        Args:
            z (`torch.Tensor` of shape `(…, n + m)`):
                Normalized pairs.
            level (`torch.Tensor` or `int`):
                Noise level index k (σ = `schedule.sigmas[k]`): one for all, or one per pair (shape `(…)`).

        Returns:
            `torch.Tensor` of shape `z.shape[:-1]`: in normalized units squared.
        """
        level = torch.as_tensor(level, device=z.device, dtype=torch.long).expand(z.shape[:-1])
        return self.schedule.sigmas[level].square() * self.net(z, level).squeeze(-1)

    def reference_pairs(self) -> torch.Tensor:
        r"""
        The normalized reference pairs `(N_ref, n + m)`; an `SGPError` if none were set (the estimator was
        not trained in this process: checkpoints do not hold them).
        """
        require(
            self.reference.shape[0] > 0,
            "the distance estimator has no reference data: train it with a datamodule "
            "(set_data is called in setup)",
        )
        return self.reference

    def exact(self, z: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        r"""
        The regression target: the exact streamed softmin d_σ(z)² over the reference set (no gradient).

        Args:
            z (`torch.Tensor` of shape `(B, n + m)`):
                Normalized query pairs.
            level (`torch.Tensor` of shape `(B,)`):
                Noise level index per query.

        Returns:
            `torch.Tensor` of shape `(B,)`: in normalized units squared.
        """
        with torch.no_grad():
            return smoothed_distance_sq(z, self.reference_pairs(), self.schedule.sigmas[level])

    def queries(self, anchors: torch.Tensor, level: torch.Tensor, generator=None) -> torch.Tensor:
        r"""
        Query points of Ω: the first `uniform_fraction` uniform in the widened data box, the rest the
        anchors plus σ_k noise.

        Args:
            anchors (`torch.Tensor` of shape `(B, n + m)`):
                Normalized data pairs the near queries are drawn around.
            level (`torch.Tensor` of shape `(B,)`):
                Noise level index per query.
            generator (`torch.Generator`, *optional*):
                Source of the uniform draws and the noise.

        Returns:
            `torch.Tensor` of shape `(B, n + m)`: normalized queries, uniform ones first.
        """
        num_uniform = int(round(self.uniform_fraction * anchors.shape[0]))
        reference = self.reference_pairs()
        low, high = reference.min(0).values - self.margin, reference.max(0).values + self.margin
        rand = torch.rand(anchors.shape, device=anchors.device, generator=generator, dtype=anchors.dtype)
        noise = torch.randn(anchors.shape, device=anchors.device, generator=generator, dtype=anchors.dtype)
        near = anchors + self.schedule.sigmas[level].unsqueeze(-1) * noise
        uniform = low + rand * (high - low)
        return torch.cat([uniform[:num_uniform], near[num_uniform:]])

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""
        Eq. 43: mean |g(z, k) − d_σk(z)² / σ_k²| over queries around the batch's first `queries_per_step`
        pairs, with a uniform random level per query.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x` and `u`.
            generator (`torch.Generator`, *optional*):
                Source of the levels and queries (validation passes a fixed one).

        Returns:
            `torch.Tensor`: the scalar loss, dimensionless (distances over σ²).
        """
        # Each query costs a pass over the reference set, so a step may use only part of the batch.
        anchors = self.normalize_pair(batch["x"], batch["u"])[: self.queries_per_step]
        level = torch.randint(
            0, self.schedule.num_levels, anchors.shape[:1], device=anchors.device, generator=generator
        )
        z = self.queries(anchors, level, generator)
        target = self.exact(z, level) / self.schedule.sigmas[level].square()
        return (self.net(z, level).squeeze(-1) - target).abs().mean()

    @torch.no_grad()
    def error_by_level(self, anchors: torch.Tensor, seed: int = 0) -> list[dict[str, float]]:
        r"""
        Per noise level, the estimator's error against the exact softmin on queries around held-out pairs
        (near-data and uniform, as in training).

        Args:
            anchors (`torch.Tensor` of shape `(B, n + m)`):
                Held-out normalized pairs.
            seed (`int`, *optional*, defaults to 0):
                Seed of the queries.

        Returns:
            `list[dict[str, float]]`: one row per level with `level`, `sigma` and, for the `near` and the
            `uniform` queries, `abs_error_<queries>` (mean |d̂² − d²|, normalized units squared) and
            `scaled_error_<queries>` (the same divided by σ², eq. 43's weighting).
        """
        generator = torch.Generator(device=anchors.device).manual_seed(seed)
        rows = []
        num_uniform = int(round(self.uniform_fraction * anchors.shape[0]))
        for k in range(self.schedule.num_levels):
            level = torch.full(anchors.shape[:1], k, device=anchors.device, dtype=torch.long)
            z = self.queries(anchors, level, generator)
            error = (self(z, level) - self.exact(z, level)).abs()
            sigma_sq = float(self.schedule.sigmas[k]) ** 2
            row = {"level": k, "sigma": float(self.schedule.sigmas[k])}
            for name, part in (("uniform", error[:num_uniform]), ("near", error[num_uniform:])):
                if part.numel():
                    row[f"abs_error_{name}"] = float(part.mean())
                    row[f"scaled_error_{name}"] = float(part.mean()) / sigma_sq
            rows.append(row)
        return rows
