"""Prop. 2: the model error is bounded by the distance to data, given the error's Lipschitz constant L_e.

    e(x) ≤ e(x_c) + √2 · L_e · √(d_σ(x)² + C₂),   C₂ = σ² log N − C   (C = 0 here)

L_e is estimated from held-out points whose error is known, as the paper suggests (its ref. [58]): take the
largest pairwise finite slope |e_i − e_j| / ‖x_i − x_j‖ in each of many random batches of pairs; the upper
end point of the maxima's distribution is the Lipschitz constant (over the region the points cover). Its
extreme-value estimate and one-sided confidence bound come from the two largest maxima. `bound_coverage` then reports how often the bound holds on fresh points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sgp_lightning.analysis.common import Report, provenance
from sgp_lightning.distance import lipschitz_error_bound, softmin
from sgp_lightning.errors import require


@dataclass
class LipschitzEstimate:
    estimate: float  # the end-point estimate of the maximum slopes' distribution
    upper: float  # its one-sided `confidence` bound
    largest_slope: float  # the largest slope seen (a lower bound on the true constant)
    confidence: float


def pairwise_slopes(
    x: torch.Tensor, e: torch.Tensor, num_pairs: int, generator: torch.Generator
) -> torch.Tensor:
    """|e_i − e_j| / ‖x_i − x_j‖ for `num_pairs` random pairs of distinct rows (one batched draw)."""
    n = len(x)
    require(n >= 2, "estimating a Lipschitz constant needs at least 2 points")
    i = torch.randint(0, n, (num_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (num_pairs,), generator=generator)) % n  # never i
    gap = (x[i] - x[j]).flatten(1).norm(dim=-1).clamp_min(1e-12)
    return (e[i] - e[j]).abs() / gap


def estimate_lipschitz(
    x: torch.Tensor, e: torch.Tensor, num_batches: int = 200, pairs_per_batch: int = 500,
    confidence: float = 0.95, seed: int = 0,
) -> LipschitzEstimate:  # fmt: skip
    """End point of the distribution of per-batch maximum slopes of the points `x` with errors `e`.

    Robson & Whitlock's (1964) estimator of a truncation point from the two largest order statistics:
    L̂ = M₁ + (M₁ − M₂), and the one-sided bound M₁ + (M₁ − M₂)(1 − α)/α holds with probability ≥ 1 − α,
    α = 1 − confidence. (A three-parameter reverse-Weibull fit, as in Wood & Zhang, was tried first: its
    maximum-likelihood end point diverged to 10⁷ on a function with constant ≈ 3.)"""
    require(0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}")
    require(num_batches >= 2, "the end-point estimate needs at least 2 batches")
    generator = torch.Generator().manual_seed(seed)
    slopes = pairwise_slopes(x, e, num_batches * pairs_per_batch, generator).view(
        num_batches, pairs_per_batch
    )
    top_two = slopes.max(1).values.double().topk(2).values
    largest, second = float(top_two[0]), float(top_two[1])
    alpha = 1.0 - confidence
    return LipschitzEstimate(
        estimate=2 * largest - second,
        upper=largest + (largest - second) * (1 - alpha) / alpha,
        largest_slope=largest,
        confidence=confidence,
    )


def error_bound(queries: torch.Tensor, data: torch.Tensor, data_errors: torch.Tensor, lipschitz: float,
                sigma: float) -> torch.Tensor:  # fmt: skip
    """Prop. 2's bound at each query: error at the nearest data point plus √2·L·√(d_σ² + σ² log N)."""
    result = softmin(queries.flatten(1), data.flatten(1), sigma)
    return lipschitz_error_bound(
        data_errors[result.nearest_index], lipschitz, result.distance_sq, sigma, len(data)
    )


def bound_coverage(
    queries: torch.Tensor, query_errors: torch.Tensor, data: torch.Tensor, data_errors: torch.Tensor,
    lipschitz: float, sigma: float,
) -> dict:  # fmt: skip
    """Share of `queries` whose true error is within Prop. 2's bound (e at the nearest data point plus the
    distance term with the exact smoothed distance), and how loose the bound is where it holds."""
    bound = error_bound(queries, data, data_errors, lipschitz, sigma)
    holds = query_errors <= bound
    return {
        "holds": float(holds.float().mean()),
        "mean_bound": float(bound.mean()),
        "mean_error": float(query_errors.mean()),
        "median_slack": float((bound - query_errors)[holds].median()) if holds.any() else math.nan,
    }


def _report(
    name: str, held_x, held_e, data_x, data_e, fresh_x, fresh_e, sigma: float, cfg, regions=None
) -> dict:
    """Estimate L_e on held-out points, then the bound's coverage on fresh points with the confidence
    bound, the point estimate and the naive largest slope (per region, if given)."""
    estimate = estimate_lipschitz(
        held_x, held_e, cfg.num_batches, cfg.pairs_per_batch, cfg.confidence, cfg.seed
    )
    out = {"lipschitz": estimate.__dict__, "sigma": sigma, "num_data": len(data_x), "coverage": {}}
    regions = regions or {"all": torch.ones(len(fresh_x), dtype=torch.bool)}
    bound = error_bound(fresh_x, data_x, data_e, estimate.upper, sigma)
    out["points"] = {  # for the figure only (not written to results.json)
        region: {"error": fresh_e[mask].tolist(), "bound": bound[mask].tolist()}
        for region, mask in regions.items()
    }
    for label, constant in (("upper", estimate.upper), ("estimate", estimate.estimate),
                            ("largest_slope", estimate.largest_slope)):  # fmt: skip
        out["coverage"][label] = {
            region: bound_coverage(fresh_x[mask], fresh_e[mask], data_x, data_e, constant, sigma)
            for region, mask in regions.items()
            if mask.any()
        }
    return out


def known_function_study(cfg) -> dict:
    """f(x) = sin 3x₀ + cos 2x₁ on [−2, 2]², an MLP f_θ fitted to `num_data` samples; e = |f − f_θ|."""
    generator = torch.Generator().manual_seed(cfg.seed)

    def f(x):
        return torch.sin(3 * x[:, 0]) + torch.cos(2 * x[:, 1])

    def uniform(n):
        return torch.rand(n, 2, generator=generator) * 4 - 2

    data_x, held_x, fresh_x = uniform(cfg.num_data), uniform(cfg.num_held_out), uniform(cfg.num_fresh)
    torch.manual_seed(cfg.seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 1))  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(cfg.fit_steps):
        optimizer.zero_grad()
        (net(data_x).squeeze(-1) - f(data_x)).square().mean().backward()
        optimizer.step()
    with torch.no_grad():

        def error(x):
            return (f(x) - net(x).squeeze(-1)).abs()

        return _report("known_f", held_x, error(held_x), data_x, error(data_x), fresh_x, error(fresh_x),
                       cfg.sigma, cfg)  # fmt: skip


def pit_dynamics_study(cfg, compose) -> dict:
    """The pit domain's learned dynamics: e(x, u) = ‖f(x, u) − f_θ(x, u)‖ in normalized (x, u) space,
    L_e from the validation pairs, coverage on fresh (x, u) uniform in the data's box, inside and outside
    the pit (where the true dynamics change and no data was collected)."""
    from sgp_lightning.train import train

    run_dir = cfg.output_dir + "/runs/pit"
    _, trained = train(compose("train", [*cfg.train_overrides, f"seed={cfg.seed}", f"paths.output_dir='{run_dir}'",
                                         "trainer.enable_progress_bar=false"]))  # fmt: skip
    system, env, datamodule = trained["system"].cpu().eval(), trained["env"], trained["datamodule"]
    dynamics = system.dynamics
    generator = torch.Generator().manual_seed(cfg.seed)
    box, limit = float(env.box), float(env.action_limit)
    x = (torch.rand(cfg.num_fresh, 2, generator=generator) * 2 - 1) * box
    u = (torch.rand(cfg.num_fresh, 2, generator=generator) * 2 - 1) * limit

    with torch.no_grad():

        def normalized(x, u):
            return system.score.normalize_pair(x, u)

        def error(x, u):
            return (env.step(x, u) - dynamics(x, u)).norm(dim=-1)

        train_d, val_d = datamodule.train_data, datamodule.val_data
        data_x, data_e = normalized(train_d["x"], train_d["u"]), error(train_d["x"], train_d["u"])
        held_x, held_e = normalized(val_d["x"], val_d["u"]), error(val_d["x"], val_d["u"])
        regions = {"outside the pit": ~env.in_pit(x), "inside the pit": env.in_pit(x)}
        return _report("pit", held_x, held_e, data_x, data_e, normalized(x, u), error(x, u), cfg.sigma, cfg,
                       regions)  # fmt: skip


def reproduce_lipschitz(cfg, compose) -> dict:
    """`python reproduce.py lipschitz output_dir=DIR`: results.json and table.md."""
    from omegaconf import OmegaConf, open_dict

    entry = cfg.reproduce
    settings = entry.settings.copy()
    with open_dict(settings):
        settings.output_dir = str(cfg.output_dir)
    report = Report(cfg)
    studies = {
        "known f": known_function_study(settings),
        "pit dynamics": pit_dynamics_study(settings, compose),
    }
    payload = {
        "studies": studies,
        "settings": OmegaConf.to_container(entry.settings),
        **report.record(),
    }  # fmt: skip
    from sgp_lightning.plotting import plt

    fig, axes = plt.subplots(1, len(studies), figsize=(4.6 * len(studies), 4.2), squeeze=False)
    for ax, (name, study) in zip(axes[0], studies.items(), strict=True):
        for region, points in study.pop("points").items():
            ax.scatter(points["bound"], points["error"], s=3, alpha=0.5, label=region)
        limits = ax.get_xlim()
        ax.plot(limits, limits, "k--", lw=0.8, label="error = bound")
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel("Prop. 2 bound (upper L_e)"), ax.set_ylabel("true error e(x)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, "lipschitz.png")
    columns = ["study", "L_e: largest slope / estimate / upper", "fresh points",
               "bound holds with upper / estimate / largest slope", "mean error", "mean bound (upper)"]  # fmt: skip
    rows = []
    for name, study in studies.items():
        lip, cov = study["lipschitz"], study["coverage"]
        for region in cov["upper"]:
            holds = " / ".join(
                f"{cov[k][region]['holds']:.1%}" for k in ("upper", "estimate", "largest_slope")
            )
            rows.append([name, f"{lip['largest_slope']:.3g} / {lip['estimate']:.3g} / {lip['upper']:.3g}", region,
                         holds, f"{cov['upper'][region]['mean_error']:.3g}",
                         f"{cov['upper'][region]['mean_bound']:.3g}"])  # fmt: skip
    s = entry.settings
    note = (
        f"Bound: e(x) ≤ e(x_c) + √2·L_e·√(d_σ(x)² + σ² log N), exact smoothed distance with σ = {s.sigma}. L_e "
        f"from {s.num_batches} batches of {s.pairs_per_batch} held-out pairs: Robson–Whitlock end point of the batch "
        f"maxima, upper = its one-sided {s.confidence:.0%} bound. Known f: sin 3x₀ + cos 2x₁ "
        f"on [−2, 2]², MLP fitted to {s.num_data} samples, {s.num_held_out} held-out, {s.num_fresh} fresh points. "
        f"Pit: learned dynamics of `{' '.join(s.train_overrides)}`, normalized (x, u) space, validation pairs "
        f"held out, fresh (x, u) uniform in the data box. Seed {s.seed}. {provenance(payload)}"
    )
    return report.write(payload, report.table(columns, rows, note))
