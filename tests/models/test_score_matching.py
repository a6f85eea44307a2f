"""Denoising score matching (eq. 10) learns the exact score near the data."""

import torch

from sgp_lightning.distance import exact_score
from sgp_lightning.models import ScoreModel
from sgp_lightning.nets import NoiseConditionedMLP
from sgp_lightning.schedules import NoiseSchedule

# Stated tolerance: after 2000 Adam steps on 64 points, at σ ≥ 0.5 the learned score has relative RMS error
# < 0.35 and mean cosine > 0.93 against the exact score, at points drawn near the data (x_i + σε).
# Smaller σ needs far more training (paper D.2.1), which is why it is not asserted here.
REL_TOL, COS_TOL = 0.35, 0.93


def test_dsm_trained_score_matches_exact_score_near_data():
    torch.manual_seed(0)
    data = torch.randn(64, 2)
    schedule = NoiseSchedule.geometric(1.0, 0.2, 4)
    net = NoiseConditionedMLP(2, schedule.sigmas, [128, 128], "silu")
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(2000):
        x = data[torch.randint(0, 64, (256,))]
        level = torch.randint(0, 4, (256,))
        sigma, noise = schedule.sigmas[level][:, None], torch.randn(256, 2)
        loss = (sigma * net(x + sigma * noise, level) + noise).square().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    g = torch.Generator().manual_seed(1)
    for level in (0, 1):
        sigma = float(schedule.sigmas[level])
        query = data[torch.randint(0, 64, (2000,), generator=g)] + sigma * torch.randn(2000, 2, generator=g)
        with torch.no_grad():
            learned = net(query, level)
        exact = exact_score(query, data, sigma)
        rel = ((learned - exact).norm(dim=-1).square().mean() / exact.norm(dim=-1).square().mean()).sqrt()
        cos = torch.nn.functional.cosine_similarity(learned, exact).mean()
        assert rel < REL_TOL and cos > COS_TOL, f"σ={sigma:.2f}: relative error {rel:.3f}, cosine {cos:.3f}"


def test_score_model_loss_is_eq10_with_one_level_per_sample():
    model = ScoreModel(
        1, 1, hidden_dims=[8], schedule="geometric", sigma_max=1.0, sigma_min=0.1, num_levels=3
    )
    batch = {"x": torch.randn(5, 1), "u": torch.randn(5, 1)}
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    loss = model.loss(batch, g1)
    z = model.normalize_pair(batch["x"], batch["u"])
    level = torch.randint(0, 3, (5,), generator=g2)
    noise = torch.randn(z.shape, generator=g2)
    sigma = model.schedule.sigmas[level][:, None]
    # σ²‖s(z + σε) + ε/σ‖² = ‖σ s + ε‖²
    expected = (sigma**2 * (model(z + sigma * noise, level) + noise / sigma).square()).sum(-1).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_noise_conditioned_mlp_divides_by_sigma_and_uses_level_embedding():
    net = NoiseConditionedMLP(3, [2.0, 0.5], [16])
    z = torch.randn(4, 3)
    # Embeddings start at one, so the only difference between levels at init is the 1/σ output scale.
    assert torch.allclose(net(z, 0) * 2.0, net(z, 1) * 0.5, atol=1e-6)
    with torch.no_grad():
        net.level_embeddings[0].weight[1].mul_(3.0)
    assert not torch.allclose(net(z, 0) * 2.0, net(z, 1) * 0.5)
    assert net(torch.randn(2, 5, 3), torch.tensor(1)).shape == (2, 5, 3)  # (B, T, d) in one call
