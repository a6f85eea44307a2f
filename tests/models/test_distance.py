"""The exact oracle: Prop. 3 (score = −∇d²/σ²), chunking, Prop. 1 (annealed descent lands on data), Prop. 2."""

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


def test_streaming_handles_a_million_points_in_bounded_chunks():
    big = torch.rand(1_000_000, 2, generator=torch.Generator().manual_seed(1))
    x = torch.rand(4, 2, generator=torch.Generator().manual_seed(2))
    result = softmin(x, big, 0.05, chunk_size=100_000)
    assert torch.isfinite(result.score).all() and result.score.shape == (4, 2)
    assert torch.allclose(
        result.distance_sq, softmin(x, big, 0.05, chunk_size=250_000).distance_sq, atol=1e-6
    )


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
