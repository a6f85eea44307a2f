"""Exact smoothed distance to data (paper eq. 4) and the exact score ∇ log p_σ (Prop. 3).

These are the oracles learned scores are tested against. Both stream over the dataset in chunks with an
online log-sum-exp, so memory is O(queries × chunk) whatever the dataset size (1M points fit easily).

    d_σ(x)² = −σ² log Σ_i exp(−‖x − x_i‖² / 2σ²)          (C = 0)
    ∇_x log p_σ(x) = −∇_x d_σ(x)² / σ² = (Σ_i w_i x_i − x) / σ²,   w = softmax(−‖x − x_i‖² / 2σ²)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sgp_lightning.errors import require

# Query × data pairs held at once: 2^24 float32 values is 64 MB.
DEFAULT_PAIR_BUDGET = 1 << 24


@dataclass
class SoftminResult:
    distance_sq: torch.Tensor  # (B,) smoothed squared distance d_σ(x)², with C = 0
    score: torch.Tensor  # (B, n) exact ∇_x log p_σ(x)
    nearest_sq: torch.Tensor  # (B,) min_i ½‖x − x_i‖² (unsmoothed)
    nearest_index: torch.Tensor  # (B,) argmin_i


def _pairwise_half_sq(x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    # ½‖x − y‖² via the matmul identity: O(B·M) memory instead of O(B·M·n).
    sq = (x * x).sum(-1, keepdim=True) + (data * data).sum(-1) - 2.0 * x @ data.T
    return 0.5 * sq.clamp_min(0.0)


def softmin(
    x: torch.Tensor,
    data: torch.Tensor,
    sigma: float | torch.Tensor,
    chunk_size: int | None = None,
    pair_budget: int = DEFAULT_PAIR_BUDGET,
) -> SoftminResult:
    """Smoothed distance, exact score and nearest point of every query in `x` (B, n) to `data` (N, n).

    `sigma` is a float or a (B,) tensor (one σ per query). Streams over `data` in chunks of `chunk_size`
    rows (default: as many as fit in `pair_budget` query×data pairs).
    """
    require(x.dim() == 2 and data.dim() == 2, "softmin expects x of shape (B, n) and data of shape (N, n)")
    require(x.shape[1] == data.shape[1], f"dimension mismatch: queries {x.shape[1]}, data {data.shape[1]}")
    require(data.shape[0] > 0, "the dataset is empty: smoothed distance to data is undefined")
    batch = x.shape[0]
    if chunk_size is None:
        chunk_size = max(1, pair_budget // max(batch, 1))
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(batch)
    require(bool(torch.all(sigma > 0)), "σ must be positive")
    inv_two_var = 1.0 / (2.0 * sigma.square())

    running_max = torch.full((batch,), -math.inf, dtype=x.dtype, device=x.device)
    running_sum = torch.zeros(batch, dtype=x.dtype, device=x.device)
    weighted = torch.zeros_like(x)
    nearest_sq = torch.full((batch,), math.inf, dtype=x.dtype, device=x.device)
    nearest_index = torch.zeros(batch, dtype=torch.long, device=x.device)

    for start in range(0, data.shape[0], chunk_size):
        chunk = data[start : start + chunk_size].to(x)
        half_sq = _pairwise_half_sq(x, chunk)  # (B, M)
        chunk_min, chunk_arg = half_sq.min(1)
        closer = chunk_min < nearest_sq
        nearest_sq = torch.where(closer, chunk_min, nearest_sq)
        nearest_index = torch.where(closer, chunk_arg + start, nearest_index)

        logits = -half_sq * 2.0 * inv_two_var[:, None]  # −‖x − x_i‖² / 2σ²
        new_max = torch.maximum(running_max, logits.max(1).values)
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max[:, None])
        running_sum = running_sum * rescale + weights.sum(1)
        weighted = weighted * rescale[:, None] + weights @ chunk
        running_max = new_max

    log_sum = running_max + running_sum.log()
    distance_sq = -sigma.square() * log_sum
    score = (weighted / running_sum[:, None] - x) / sigma.square()[:, None]
    return SoftminResult(distance_sq, score, nearest_sq, nearest_index)


def nearest_distance(
    x: torch.Tensor, data: torch.Tensor, pair_budget: int = DEFAULT_PAIR_BUDGET
) -> torch.Tensor:
    """Euclidean distance from each point of x (..., n) to its nearest row of data (N, n), shape x.shape[:-1];
    streamed over the data in chunks like `softmin`, without its smoothing."""
    require(
        data.dim() == 2 and data.shape[0] > 0, "nearest_distance needs a non-empty dataset of shape (N, n)"
    )
    flat = x.reshape(-1, x.shape[-1])
    chunk_size = max(1, pair_budget // max(flat.shape[0], 1))
    nearest_sq = torch.stack(
        [_pairwise_half_sq(flat, data[s : s + chunk_size].to(flat)).min(1).values
         for s in range(0, data.shape[0], chunk_size)],
        1,
    ).min(1).values  # fmt: skip
    return (2.0 * nearest_sq).sqrt().reshape(x.shape[:-1])


def smoothed_distance_sq(x, data, sigma, chunk_size=None) -> torch.Tensor:
    """d_σ(x; D)² of eq. (4) with C = 0, shape (B,). Differentiable in x."""
    require(data.shape[0] > 0, "the dataset is empty: smoothed distance to data is undefined")
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_PAIR_BUDGET // max(x.shape[0], 1))
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    parts = [
        -_pairwise_half_sq(x, data[s : s + chunk_size].to(x)) / sigma.square()[:, None]
        for s in range(0, data.shape[0], chunk_size)
    ]
    # Per-chunk logsumexp then a logsumexp over chunks: exact and differentiable, O(B × chunks) extra.
    lse = torch.stack([p.logsumexp(1) for p in parts], 1).logsumexp(1)
    return -sigma.square() * lse


def exact_score(x, data, sigma, chunk_size=None) -> torch.Tensor:
    """∇_x log p_σ(x; D), shape (B, n)."""
    return softmin(x, data, sigma, chunk_size).score


def lipschitz_error_bound(error_at_nearest, lipschitz, distance_sq, sigma, num_data, offset_c=0.0):
    """Proposition 2: e(x) ≤ e(x_c) + √2·L_e·√(d_σ(x)² + C₂), with C₂ = σ² log N − C."""
    c2 = sigma**2 * math.log(num_data) - offset_c
    return error_at_nearest + math.sqrt(2.0) * lipschitz * torch.sqrt((distance_sq + c2).clamp_min(0.0))


class ExactScoreModel(torch.nn.Module):
    """The exact score of a dataset behind the ScoreModel interface (normalize_pair, schedule, forward).

    Plans with the oracle instead of a learned score: for tests, and to tell score-learning error apart
    from planner behaviour. Cost is O(queries × N) per call, so keep N modest.
    """

    def __init__(self, pairs: torch.Tensor, schedule, pair_norm=None):
        super().__init__()
        from sgp_lightning.normalization import Normalizer

        self.pair_norm = pair_norm if pair_norm is not None else Normalizer(pairs.shape[-1]).fit(pairs)
        self.schedule = schedule
        self.register_buffer("data", self.pair_norm(pairs).detach())

    def normalize_pair(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.pair_norm(torch.cat([x, u], -1))

    def forward(self, z: torch.Tensor, level) -> torch.Tensor:
        sigma = float(self.schedule.sigmas[int(level)])
        flat = z.reshape(-1, z.shape[-1])
        return softmin(flat, self.data.to(flat), sigma).score.reshape(z.shape)
