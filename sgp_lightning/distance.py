"""Exact smoothed distance to data (paper eq. 4) and the exact score ∇ log p_σ (Prop. 3).

These are the oracles learned scores are tested against. Both stream over the dataset in chunks with an
online log-sum-exp, so memory is O(queries × chunk) whatever the dataset size (1M points fit easily).

    d_σ(x)² = −σ² log Σ_i exp(−‖x − x_i‖² / 2σ²)          (C = 0)
    ∇_x log p_σ(x) = −∇_x d_σ(x)² / σ² = (Σ_i w_i x_i − x) / σ²,   w = softmax(−‖x − x_i‖² / 2σ²)

Precision. At small σ the logits −‖x − x_i‖² / 2σ² are large (4.5·10⁴ for σ = 0.01 three units from the
data) and the softmax weights turn on their differences, so a float32 ‖x‖² + ‖y‖² − 2⟨x, y⟩ puts the
score off by up to percents there. Everything inside runs in float64, with the logits formed around the
data's mean in one matrix product per chunk; results are rounded once to x's dtype, so a float32 answer is
the float64 one to within float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sgp_lightning.errors import require

# Query × data pairs `softmin` holds per chunk: 2^18 float64 logits are 2 MB, which stay in cache; larger
# chunks run no faster, smaller ones pay more per-chunk overhead.
DEFAULT_PAIR_BUDGET = 1 << 18
# `nearest_distance` keeps its own, larger chunks (2^24 float32 pairs, 64 MB).
NEAREST_PAIR_BUDGET = 1 << 24
# Logits more than 700 below the chunk's largest add under e^-700 ≈ 1e-304 of the largest weight each;
# clamping them there keeps exp out of the subnormal range, where it runs several times slower.
_LOGIT_FLOOR = -700.0


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


def _stream(x: torch.Tensor, data: torch.Tensor, sigma, chunk_size: int | None, pair_budget: int):
    r"""
    The streamed log-sum-exp behind `softmin` and `smoothed_distance_sq`, all in float64.

    Args:
        x (`torch.Tensor` of shape `(B, n)`): Queries.
        data (`torch.Tensor` of shape `(N, n)`): Data points, any float dtype, on x's device.
        sigma (`float` or `torch.Tensor` of shape `(B,)`): Smoothing per query, in x's units; > 0.
        chunk_size (`int`, *optional*): Data rows per chunk; default `pair_budget // B`.
        pair_budget (`int`): Query × data pairs per chunk when `chunk_size` is None.

    Returns:
        `tuple` of float64 tensors `(distance_sq (B,), pull (B, n), nearest_sq (B,), sigma_sq (B,))` and
        `nearest_index (B,)` (long), where `pull = Σ_i w_i x_i − x = −∇_x d_σ(x)²`.
    """
    require(x.dim() == 2 and data.dim() == 2, "softmin expects x of shape (B, n) and data of shape (N, n)")
    require(x.shape[1] == data.shape[1], f"dimension mismatch: queries {x.shape[1]}, data {data.shape[1]}")
    require(data.shape[0] > 0, "the dataset is empty: smoothed distance to data is undefined")
    batch, dim, num_data = x.shape[0], x.shape[1], data.shape[0]
    f64, device = torch.float64, x.device
    if chunk_size is None:
        chunk_size = max(1, pair_budget // max(batch, 1))
    require(chunk_size >= 1, f"chunk_size must be ≥ 1, got {chunk_size}")
    sigma_sq = torch.as_tensor(sigma, dtype=f64, device=device).expand(batch).square()
    require(bool(torch.all(sigma_sq > 0)), "σ must be positive")
    inv_two_var = 0.5 / sigma_sq  # (B,)

    # Around the data's mean c, with q = x − c and y_i = x_i − c, the logit −‖x − x_i‖²/2σ² is
    # ⟨[−1/2σ², q/σ²], [‖y_i‖², y_i]⟩ − ‖q‖²/2σ²: one product per chunk, the last term once per query.
    # Any c is exact; the mean keeps the terms small. (Taken in data's dtype: a float64 sum would copy it.)
    center = data.mean(0).to(device=device, dtype=f64)
    q = x.to(f64) - center  # (B, n)
    lhs = torch.cat([-inv_two_var[:, None], 2.0 * inv_two_var[:, None] * q], 1)  # (B, n + 1)
    offset = inv_two_var * q.square().sum(1)  # (B,) ‖q‖²/2σ², the part of each logit left out

    # Rows [‖y_i‖², y_i, 1]: columns :n+1 enter the logits, columns 1: give Σ w y and Σ w in one product.
    rows = torch.ones(min(chunk_size, num_data), dim + 2, dtype=f64, device=device)
    logits_buffer = torch.empty(batch * rows.shape[0], dtype=f64, device=device)
    # Running (over chunks) largest shifted logit, and Σ_i w_i [y_i, 1] with w_i = exp(logit_i − largest).
    largest = torch.full((batch,), -math.inf, dtype=f64, device=device)
    sums = torch.zeros(batch, dim + 1, dtype=f64, device=device)
    nearest_index = torch.zeros(batch, dtype=torch.long, device=device)
    for start in range(0, num_data, chunk_size):
        chunk = data[start : start + chunk_size]
        part = rows[: chunk.shape[0]]
        torch.sub(chunk.to(device=device, dtype=f64), center, out=part[:, 1:-1])
        part[:, 0] = part[:, 1:-1].square().sum(1)
        logits = logits_buffer[: batch * chunk.shape[0]].view(batch, chunk.shape[0])
        torch.mm(lhs, part[:, :-1].T, out=logits)
        chunk_largest, chunk_arg = logits.max(1)
        weights = logits.sub_(chunk_largest[:, None]).clamp_min_(_LOGIT_FLOOR).exp_()  # in place
        chunk_sums = weights @ part[:, 1:]  # (B, n + 1)

        nearest_index = torch.where(chunk_largest > largest, chunk_arg + start, nearest_index)
        new_largest = torch.maximum(largest, chunk_largest)
        rescale = torch.exp(torch.stack([largest, chunk_largest]) - new_largest)  # (2, B)
        sums = sums * rescale[0, :, None] + chunk_sums * rescale[1, :, None]
        largest = new_largest

    log_sum = largest - offset + sums[:, dim].log()  # log Σ_i exp(−‖x − x_i‖²/2σ²)
    distance_sq = -sigma_sq * log_sum
    pull = sums[:, :dim] / sums[:, dim:] - q
    nearest_sq = ((offset - largest) / (2.0 * inv_two_var)).clamp_min(0.0)
    return distance_sq, pull, nearest_sq, sigma_sq, nearest_index


def softmin(
    x: torch.Tensor,
    data: torch.Tensor,
    sigma: float | torch.Tensor,
    chunk_size: int | None = None,
    pair_budget: int = DEFAULT_PAIR_BUDGET,
) -> SoftminResult:
    r"""
    Smoothed distance, exact score and nearest point of every query to the data (no gradient; see
    `smoothed_distance_sq` for a differentiable d_σ²).

    Streams over `data` in chunks with an online log-sum-exp: extra memory is O(B × chunk + chunk × n),
    whatever N is. The logits are formed in float64 (module docstring), so results are exact to the
    precision of `x`'s dtype even at small σ far from the data.

    Args:
        x (`torch.Tensor` of shape `(B, n)`):
            Queries.
        data (`torch.Tensor` of shape `(N, n)`):
            Data points, N ≥ 1, on x's device (any float dtype).
        sigma (`float` or `torch.Tensor` of shape `(B,)`):
            Smoothing σ > 0, one for all queries or one per query, in the units of x.
        chunk_size (`int`, *optional*):
            Data rows per chunk; default as many as fit in `pair_budget` query × data pairs.
        pair_budget (`int`, *optional*, defaults to `DEFAULT_PAIR_BUDGET`):
            Query × data pairs per chunk when `chunk_size` is not given.

    Returns:
        `SoftminResult` in x's dtype: `distance_sq` (B,) d_σ(x)² with C = 0, `score` (B, n) ∇_x log p_σ(x),
        `nearest_sq` (B,) min_i ½‖x − x_i‖², `nearest_index` (B,) its argmin (the first of equals).
    """
    with torch.no_grad():
        distance_sq, pull, nearest_sq, sigma_sq, nearest_index = _stream(
            x, data, sigma, chunk_size, pair_budget
        )
    return SoftminResult(
        distance_sq.to(x.dtype),
        (pull / sigma_sq[:, None]).to(x.dtype),
        nearest_sq.to(x.dtype),
        nearest_index,
    )


def nearest_distance(
    x: torch.Tensor, data: torch.Tensor, pair_budget: int = NEAREST_PAIR_BUDGET
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


class _SmoothedDistanceSq(torch.autograd.Function):
    """d_σ(x)² with the exact gradient −(Σ_i w_i x_i − x) from the same streamed pass (Prop. 3)."""

    @staticmethod
    def forward(ctx, x, data, sigma, chunk_size):
        distance_sq, pull, _, _, _ = _stream(x, data, sigma, chunk_size, DEFAULT_PAIR_BUDGET)
        ctx.save_for_backward((-pull).to(x.dtype))
        return distance_sq.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (gradient,) = ctx.saved_tensors
        return grad_output[:, None] * gradient, None, None, None


def smoothed_distance_sq(
    x: torch.Tensor, data: torch.Tensor, sigma: float | torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    r"""
    d_σ(x; D)² of eq. (4) with C = 0, streamed like `softmin`; differentiable in x (once: its gradient is
    the exact −(Σ_i w_i x_i − x) of the same pass, not a graph through the chunks).

    Args:
        x (`torch.Tensor` of shape `(B, n)`):
            Queries.
        data (`torch.Tensor` of shape `(N, n)`):
            Data points, N ≥ 1 (no gradient flows to them).
        sigma (`float` or `torch.Tensor` of shape `(B,)`):
            Smoothing σ > 0, one for all queries or one per query (no gradient flows to it).
        chunk_size (`int`, *optional*):
            Data rows per chunk; default as many as fit in `DEFAULT_PAIR_BUDGET` pairs.

    Returns:
        `torch.Tensor` of shape `(B,)` in x's dtype, in x's units squared.
    """
    require(
        not data.requires_grad and not (torch.is_tensor(sigma) and sigma.requires_grad),
        "smoothed_distance_sq is differentiable in x only: detach data and σ",
    )
    return _SmoothedDistanceSq.apply(x, data, sigma, chunk_size)


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
