"""Paper Fig. 1: uncertainty metrics in 1-D offline optimisation.

A known cost f(x) is sampled at a handful of points; an MLP f_θ is fitted to them. Three uncertainty
penalties μ²(x) are compared:
- distance to data: the exact smoothed distance d_σ(x)² + σ² log N (≥ 0), annealed σ during descent (Prop. 1);
- an ensemble of M = 2 MLPs fitted like f_θ from other seeds: the members' variance;
- a Gaussian process with an RBF kernel (fixed hyperparameters): its posterior variance.
Each is divided by its maximum on the plotting grid so one β means the same for all three. Gradient descent
on f_θ(x) + β μ²(x) runs from many random starts at once (one batch), and the report gives, per metric, the
share of runs ending within ε of a data point and the true cost f of where they end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sgp_lightning.analysis.common import Report, provenance
from sgp_lightning.distance import smoothed_distance_sq
from sgp_lightning.errors import require

METRICS = ("distance", "ensemble", "gp")


def true_cost(x: torch.Tensor) -> torch.Tensor:
    """The known 1-D cost: a bowl with ripples, whose global minimum (x ≈ −0.37) has no data near it."""
    return 0.5 * x.square() + torch.sin(4.0 * x)


@dataclass
class Setup:
    data_x: torch.Tensor  # (N, 1) sampled inputs
    data_y: torch.Tensor  # (N,) f at those inputs
    model: nn.Module  # f_θ
    members: list[nn.Module]  # the ensemble's members
    grid: torch.Tensor  # (G, 1) plotting grid
    scales: dict[str, float]  # max of each raw μ² on the grid (penalties are divided by it)


def sample_data(num_points: int, low: float, high: float, gap: tuple[float, float], seed: int):
    """`num_points` inputs uniform in [low, high] outside the `gap` interval, and f there."""
    generator = torch.Generator().manual_seed(seed)
    draws = low + (high - low) * torch.rand(num_points * 20, generator=generator)
    keep = draws[(draws < gap[0]) | (draws > gap[1])][:num_points]
    require(len(keep) == num_points, "the gap leaves too little room for the samples")
    x = keep.sort().values.unsqueeze(-1)
    return x, true_cost(x).squeeze(-1)


def fit_mlp(x: torch.Tensor, y: torch.Tensor, seed: int, hidden: int = 64, steps: int = 2000) -> nn.Module:
    """A tanh MLP fitted to (x, y) by full-batch Adam (the handful of samples)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (net(x).squeeze(-1) - y).square().mean()
        loss.backward()
        optimizer.step()
    return net.requires_grad_(False)


def gp_variance(
    x: torch.Tensor, data_x: torch.Tensor, length: float, signal: float, noise: float
) -> torch.Tensor:
    """Posterior variance of a zero-mean GP with an RBF kernel at x (B, 1) given inputs data_x (N, 1)."""

    def kernel(a, b):
        return signal**2 * torch.exp(-(a - b.T).square() / (2 * length**2))

    gram = kernel(data_x, data_x) + noise * torch.eye(len(data_x), dtype=x.dtype)
    cross = kernel(x, data_x)  # (B, N)
    solved = torch.linalg.solve(gram, cross.T)  # (N, B)
    return (signal**2 - (cross * solved.T).sum(-1)).clamp_min(0.0)


def raw_penalty(metric: str, x: torch.Tensor, setup: Setup, sigma: float, gp: dict) -> torch.Tensor:
    """μ²(x) before scaling, shape (B,)."""
    if metric == "distance":
        n = len(setup.data_x)
        return smoothed_distance_sq(x, setup.data_x, sigma) + sigma**2 * math.log(n)
    if metric == "ensemble":
        predictions = torch.stack([member(x).squeeze(-1) for member in setup.members])
        return predictions.var(0, unbiased=False)
    if metric == "gp":
        return gp_variance(x, setup.data_x, **gp)
    raise ValueError(metric)


def descend(
    metric: str, setup: Setup, starts: torch.Tensor, beta: float, steps: int, lr: float,
    sigmas: torch.Tensor, gp: dict,
) -> torch.Tensor:  # fmt: skip
    """Gradient descent (Adam) on f_θ(x) + β μ²(x)/scale from every start at once; the distance metric
    anneals σ along `sigmas` (equal shares of the steps), the others ignore it."""
    x = starts.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        sigma = float(sigmas[min(step * len(sigmas) // steps, len(sigmas) - 1)])
        optimizer.zero_grad()
        penalty = raw_penalty(metric, x, setup, sigma, gp) / setup.scales[metric]
        objective = setup.model(x).squeeze(-1) + beta * penalty
        objective.sum().backward()  # the runs are independent: the sum's gradient is each run's own
        optimizer.step()
    return x.detach()


def build_setup(cfg) -> Setup:
    data_x, data_y = sample_data(cfg.num_points, cfg.low, cfg.high, tuple(cfg.gap), cfg.seed)
    model = fit_mlp(data_x, data_y, seed=cfg.seed, steps=cfg.fit_steps)
    members = [
        fit_mlp(data_x, data_y, seed=cfg.seed + 1 + k, steps=cfg.fit_steps)
        for k in range(cfg.ensemble_members)
    ]
    grid = torch.linspace(cfg.low, cfg.high, cfg.grid_points).unsqueeze(-1)
    setup = Setup(data_x, data_y, model, members, grid, {})
    setup.scales = {
        metric: float(raw_penalty(metric, grid, setup, cfg.plot_sigma, dict(cfg.gp)).max())
        for metric in METRICS
    }
    return setup


def run(cfg) -> dict:
    """The whole comparison: fits, penalties on the grid, descents; returns the results payload."""
    torch.manual_seed(cfg.seed)
    setup = build_setup(cfg)
    gp = dict(cfg.gp)
    starts = cfg.low + (cfg.high - cfg.low) * torch.rand(
        cfg.num_starts, 1, generator=torch.Generator().manual_seed(cfg.seed + 100)
    )
    sigmas = torch.logspace(math.log10(cfg.sigma_max), math.log10(cfg.sigma_min), cfg.num_levels)
    results = {}
    for metric in METRICS:
        final = descend(metric, setup, starts, cfg.beta, cfg.steps, cfg.lr, sigmas, gp)
        gap_to_data = (final - setup.data_x.T).abs().min(1).values
        results[metric] = {
            "landed_on_data": float((gap_to_data <= cfg.epsilon).float().mean()),
            "mean_distance_to_data": float(gap_to_data.mean()),
            "true_cost": float(true_cost(final).mean()),
            "model_cost": float(setup.model(final).mean()),
            "final_x": final.squeeze(-1).tolist(),
        }
    grid = setup.grid
    curves = {
        "x": grid.squeeze(-1).tolist(),
        "true": true_cost(grid).squeeze(-1).tolist(),
        "model": setup.model(grid).squeeze(-1).tolist(),
        "members": [m(grid).squeeze(-1).tolist() for m in setup.members],
        "penalty": {
            metric: (raw_penalty(metric, grid, setup, cfg.plot_sigma, gp) / setup.scales[metric]).tolist()
            for metric in METRICS
        },
    }
    return {
        "data": {"x": setup.data_x.squeeze(-1).tolist(), "y": setup.data_y.tolist()},
        "metrics": results,
        "curves": curves,
    }


def reproduce_uncertainty_1d(cfg, compose=None) -> dict:
    """`python reproduce.py uncertainty_1d output_dir=DIR`: results.json, table.md and uncertainty_1d.png."""
    from sgp_lightning.plotting import plot_uncertainty_1d

    report = Report(cfg)
    payload = report.settings_study(run, plot_uncertainty_1d, "uncertainty_1d.png")
    s = cfg.reproduce.settings
    columns = ["metric", "runs ending within ε of data", "mean distance to nearest data",
               "true cost f at the end", "learned f_θ at the end"]  # fmt: skip
    names = {
        "distance": "distance to data (exact, σ annealed)",
        "ensemble": "ensemble of 2",
        "gp": "Gaussian process",
    }
    rows = []
    for metric, name in names.items():
        r = payload["metrics"][metric]
        rows.append([name, f"{r['landed_on_data']:.1%}", f"{r['mean_distance_to_data']:.3g}",
                     f"{r['true_cost']:.3g}", f"{r['model_cost']:.3g}"])  # fmt: skip
    note = (
        f"{s.num_starts} runs of {s.steps} Adam steps (lr {s.lr}) on f_θ(x) + β μ²(x), β = {s.beta}, from starts "
        f"uniform in [{s.low}, {s.high}]; ε = {s.epsilon}; {s.num_points} samples outside the gap {list(s.gap)}; "
        f"each μ² divided by its maximum on the grid; distance σ {s.sigma_max} → {s.sigma_min} over {s.num_levels} "
        f"levels; GP RBF length {s.gp.length}, signal {s.gp.signal}, noise {s.gp.noise}; seed {s.seed}.\n"
        f"{provenance(payload)}"
    )
    return report.write(payload, report.table(columns, rows, note))
