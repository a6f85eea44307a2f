"""The exact oracle: Prop. 3 (score = −∇d²/σ²), chunking, float64 brute force at small σ far from the data,
Prop. 1 (annealed descent lands on data), Prop. 2."""

import math

import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.distance import exact_score, lipschitz_error_bound, smoothed_distance_sq, softmin


@pytest.fixture
def data():
    return torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 2.0])
def test_exact_score_is_gradient_of_log_density(data, sigma):
    """Prop. 3: −σ² log p_σ = d_σ² + const, so ∇ log p_σ = −∇ d_σ² / σ²; also checked against log N(x; x_i, σ²)."""
    x = torch.randn(17, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(smoothed_distance_sq(x, data, sigma).sum(), x)
    assert torch.allclose(exact_score(x.detach(), data, sigma), -grad / sigma**2, rtol=1e-9, atol=1e-9)
    # Independent route: log of the Gaussian mixture itself.
    log_p = torch.distributions.Normal(data[None], sigma).log_prob(x[:, None]).sum(-1).logsumexp(1)
    (grad_mix,) = torch.autograd.grad(log_p.sum(), x)
    assert torch.allclose(exact_score(x.detach(), data, sigma), grad_mix, rtol=1e-8, atol=1e-8)
    # And the constant of Prop. 3: C(N, n, σ) = σ²(log N + n/2 log(2πσ²)) (the paper's A.3 writes 2πσ).
    const = -(sigma**2) * (log_p - math.log(len(data))) - smoothed_distance_sq(x, data, sigma)
    expected = sigma**2 * (math.log(len(data)) + 1.5 * math.log(2 * math.pi * sigma**2))
    assert torch.allclose(const, torch.full_like(const, expected))


def test_chunked_equals_unchunked(data):
    x = torch.randn(9, 3, dtype=torch.float64)
    whole = softmin(x, data, 0.2, chunk_size=len(data))
    for chunk in (1, 7, 128):
        part = softmin(x, data, 0.2, chunk_size=chunk)
        assert torch.allclose(part.score, whole.score, atol=1e-10)
        assert torch.allclose(part.distance_sq, whole.distance_sq, atol=1e-10)
        assert torch.equal(part.nearest_index, whole.nearest_index)
    assert torch.allclose(smoothed_distance_sq(x, data, 0.2, chunk_size=13), whole.distance_sq, atol=1e-10)


def brute_force(x, data, sigma):
    """d_σ², score, min ½‖x − x_i‖² and argmin in float64 through the full (B, N, n) difference tensor."""
    x, data = x.double(), data.double()
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])[:, None]
    half_sq = 0.5 * ((x[:, None] - data[None]) ** 2).sum(-1)
    logits = -half_sq / sigma**2
    score = (logits.softmax(1) @ data - x) / sigma**2
    return -(sigma[:, 0] ** 2) * logits.logsumexp(1), score, *half_sq.min(1)


def assert_matches_brute_force(result, x, data, sigma, rtol):
    distance_sq, score, nearest_sq, nearest_index = brute_force(x, data, sigma)
    score_error = (result.score.double() - score).norm(dim=1) / score.norm(dim=1)
    assert score_error.max() <= rtol, f"score off by {score_error.max():.1e} (relative)"
    torch.testing.assert_close(result.distance_sq.double(), distance_sq, rtol=rtol, atol=0.0)
    torch.testing.assert_close(result.nearest_sq.double(), nearest_sq, rtol=rtol, atol=1e-12)
    assert torch.equal(result.nearest_index, nearest_index)


# float32 results are the float64 ones rounded: within a few float32 ulps (2^-24 ≈ 6e-8) of the brute force.
FLOAT32_RTOL = 2.5e-7


def test_float32_queries_at_small_sigma_far_from_data_match_float64_brute_force():
    """Queries 3 units from a half circle of data (all its points within 1e-4 of that distance), away from
    the origin: at σ = 0.01 the weights turn on differences of ‖x − x_i‖² that a float32
    ‖x‖² + ‖x_i‖² − 2⟨x, x_i⟩ cannot resolve (it put the score off by 7e-5 here)."""
    g = torch.Generator().manual_seed(5)
    angle = torch.rand(2000, generator=g, dtype=torch.float64) * math.pi
    radius = 3.0 + 1e-4 * torch.rand(2000, generator=g, dtype=torch.float64)
    center = torch.tensor([4.0, -3.0], dtype=torch.float64)
    data = (center + radius[:, None] * torch.stack([angle.cos(), angle.sin()], 1)).float()
    x = (center + 1e-3 * torch.randn(4, 2, generator=g, dtype=torch.float64)).float()
    result = softmin(x, data, 0.01, chunk_size=300)
    assert result.score.dtype == torch.float32
    assert_matches_brute_force(result, x, data, 0.01, FLOAT32_RTOL)


@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0])
def test_float32_in_14_dimensions_matches_float64_brute_force(sigma):
    """Hopper-sized (x, u) pairs, data off the origin, queries half a unit, one and three units away."""
    g = torch.Generator().manual_seed(6)
    data = torch.randn(5000, 14, generator=g) + 2.0
    step = torch.nn.functional.normalize(torch.randn(12, 14, generator=g), dim=1)
    x = data[:12] + torch.tensor([0.5, 1.0, 3.0]).repeat(4)[:, None] * step
    assert_matches_brute_force(softmin(x, data, sigma, chunk_size=777), x, data, sigma, FLOAT32_RTOL)


def test_per_query_sigma_matches_brute_force(data):
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.03, 0.1, 0.3, 1.0, 3.0], dtype=torch.float64)
    assert_matches_brute_force(softmin(x, data, sigma, chunk_size=64), x, data, sigma, 1e-12)
    torch.testing.assert_close(
        smoothed_distance_sq(x, data, sigma), softmin(x, data, sigma).distance_sq, rtol=0.0, atol=0.0
    )


def test_streaming_a_million_points_matches_brute_force():
    """1M points pass through `softmin` in chunks of the default pair budget (2^18 pairs, 2 MB of logits).
    Queries up to a unit outside the data's square: a float32 matmul identity put the score off by 15% here."""
    big = torch.rand(1_000_000, 2, generator=torch.Generator().manual_seed(1))
    x = torch.rand(4, 2, generator=torch.Generator().manual_seed(2)) * 3 - 1
    result = softmin(x, big, 0.05)
    assert_matches_brute_force(result, x, big, 0.05, FLOAT32_RTOL)
    assert torch.equal(result.distance_sq, softmin(x, big, 0.05, chunk_size=250_000).distance_sq)


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_smoothed_distance_gradient_passes_gradcheck(data, sigma):
    """The gradient of `smoothed_distance_sq` (the streamed pull Σ w_i x_i − x) against finite differences."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.autograd.gradcheck(
        lambda q: smoothed_distance_sq(q, data, sigma, chunk_size=70), x.requires_grad_(True)
    )


def test_smoothed_distance_refuses_gradients_to_data_or_sigma(data):
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(SGPError, match="differentiable in x only"):
        smoothed_distance_sq(x, data.clone().requires_grad_(True), 0.1)
    with pytest.raises(SGPError, match="differentiable in x only"):
        smoothed_distance_sq(x, data, torch.tensor(0.1, dtype=torch.float64, requires_grad=True))


def test_softmin_tends_to_true_min_as_sigma_shrinks(data):
    x = torch.randn(5, 3, dtype=torch.float64)
    result = softmin(x, data, 1e-3)
    assert torch.allclose(result.distance_sq, result.nearest_sq, atol=1e-4)
    brute = 0.5 * ((x[:, None] - data[None]) ** 2).sum(-1)
    assert torch.equal(result.nearest_index, brute.argmin(1))


def test_annealed_descent_on_exact_distance_lands_on_data():
    """Prop. 1: gradient descent on d_σ² with σ annealed to ~0 converges to a data point."""
    g = torch.Generator().manual_seed(3)
    data = torch.rand(40, 2, generator=g, dtype=torch.float64) * 4 - 2
    x = torch.rand(64, 2, generator=g, dtype=torch.float64) * 5 - 2.5
    for sigma in torch.logspace(0, -2.5, 30, dtype=torch.float64):
        for _ in range(40):
            # Step h = σ² makes each step x ← softmax-weighted mean of data (the stable step size).
            x = x + sigma**2 * exact_score(x, data, sigma)
    nearest = softmin(x, data, 1e-3).nearest_sq.sqrt()
    assert nearest.max() < 1e-3, f"furthest iterate is {nearest.max():.2e} from the data"


def test_lipschitz_bound_holds_for_known_error():
    """Prop. 2 for e(x) = ‖sin(3x)‖ (L_e ≤ 3·√n), any σ."""
    g = torch.Generator().manual_seed(4)
    data = torch.rand(50, 2, generator=g, dtype=torch.float64)
    x = torch.rand(500, 2, generator=g, dtype=torch.float64) * 2 - 0.5

    def error(p):
        return torch.sin(3 * p).norm(dim=-1)

    for sigma in (0.01, 0.1, 1.0):
        result = softmin(x, data, sigma)
        bound = lipschitz_error_bound(
            error(data[result.nearest_index]), 3 * math.sqrt(2), result.distance_sq, sigma, 50
        )
        assert torch.all(error(x) <= bound + 1e-9)


def test_empty_dataset_is_an_error():
    with pytest.raises(SGPError, match="empty"):
        softmin(torch.zeros(2, 2), torch.zeros(0, 2), 0.1)


def test_nearest_distance_matches_brute_force_in_any_chunking():
    from sgp_lightning.distance import nearest_distance

    generator = torch.Generator().manual_seed(3)
    x, data = torch.randn(4, 5, 3, generator=generator), torch.randn(700, 3, generator=generator)
    brute = (x[..., None, :] - data).norm(dim=-1).min(-1).values
    for budget in (50, 1 << 24):  # many chunks, one chunk
        torch.testing.assert_close(nearest_distance(x, data, pair_budget=budget), brute, atol=1e-5, rtol=1e-5)
