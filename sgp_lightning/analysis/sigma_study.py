"""Paper Fig. 6/7 (D.2): how the noise level σ shapes a learned score, on a dense and a sparse 2-D dataset
with a hole (no data inside a disc).

One noise-conditioned MLP per dataset is trained by denoising score matching (eq. 10) over the studied
σ levels; at each σ its field is compared with the exact score of the data on a grid:
- cosine similarity of learned and exact score (grid points outside the hole, and inside it);
- the share of grid points inside the hole where the score points into the hole (toward its centre):
  small σ pushes out of the hole, to the nearest data; large σ pulls toward the data's mean, here the
  hole's centre, which is where a planner must not go (D.2.2).
"""

from __future__ import annotations

import torch

from sgp_lightning.analysis.common import Report, provenance
from sgp_lightning.distance import exact_score
from sgp_lightning.nets import NoiseConditionedMLP


def hole_dataset(num_points: int, hole_radius: float, seed: int) -> torch.Tensor:
    """Points uniform in [−1, 1]² outside the disc of `hole_radius` around the origin."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(num_points * 3 + 100, 2, generator=generator) * 2 - 1
    return draws[draws.norm(dim=-1) > hole_radius][:num_points]


def train_score(data: torch.Tensor, sigmas: torch.Tensor, cfg, seed: int) -> NoiseConditionedMLP:
    """Denoising score matching over all levels (random level per sample), full-size batches from `data`."""
    torch.manual_seed(seed)
    net = NoiseConditionedMLP(2, sigmas, list(cfg.hidden_dims), "silu")
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(int(cfg.train_steps)):
        rows = torch.randint(0, len(data), (int(cfg.batch_size),), generator=generator)
        level = torch.randint(0, len(sigmas), (int(cfg.batch_size),), generator=generator)
        noise = torch.randn(int(cfg.batch_size), 2, generator=generator)
        sigma = sigmas[level].unsqueeze(-1)
        loss = (sigma * net(data[rows] + sigma * noise, level) + noise).square().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval().requires_grad_(False)


def field_metrics(learned: torch.Tensor, exact: torch.Tensor, grid: torch.Tensor, hole_radius: float) -> dict:
    cosine = torch.nn.functional.cosine_similarity(learned, exact, dim=-1)
    inside = grid.norm(dim=-1) < hole_radius
    inward = -grid  # toward the hole's centre

    def into_hole(field):
        return float(((field * inward).sum(-1) > 0)[inside].float().mean())

    return {
        "cosine_outside_hole": float(cosine[~inside].mean()),
        "cosine_in_hole": float(cosine[inside].mean()),
        "learned_into_hole": into_hole(learned),
        "exact_into_hole": into_hole(exact),
    }


def run(cfg) -> dict:
    sigmas = torch.tensor(sorted(cfg.sigmas, reverse=True), dtype=torch.float32)
    axis = torch.linspace(-1.2, 1.2, int(cfg.grid_size))
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    datasets, fields = {}, {}
    for name, num_points in cfg.datasets.items():
        data = hole_dataset(int(num_points), float(cfg.hole_radius), int(cfg.seed))
        net = train_score(data, sigmas, cfg, int(cfg.seed))
        rows, field_rows = [], []
        for level, sigma in enumerate(sigmas.tolist()):
            learned = net(grid, level)
            exact = exact_score(grid, data, sigma)
            rows.append({"sigma": sigma, **field_metrics(learned, exact, grid, float(cfg.hole_radius))})
            field_rows.append({"learned": learned.tolist(), "exact": exact.tolist()})
        datasets[name] = {"num_points": int(num_points), "levels": rows, "data": data.tolist()}
        fields[name] = field_rows
    return {"grid": grid.tolist(), "datasets": datasets, "fields": fields}


def plot_sigma_study(payload: dict):
    from sgp_lightning.plotting import plt

    grid = torch.tensor(payload["grid"])
    names = list(payload["datasets"])
    levels = len(payload["fields"][names[0]])
    fig, axes = plt.subplots(len(names), levels, figsize=(2.9 * levels, 3.0 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        data = torch.tensor(payload["datasets"][name]["data"])
        for column in range(levels):
            ax = axes[row, column]
            field = payload["fields"][name][column]
            ax.scatter(data[:, 0], data[:, 1], s=1 if len(data) > 500 else 6, color="lightgray")
            for key, color in (("exact", "tab:blue"), ("learned", "tab:red")):
                vectors = torch.tensor(field[key])
                vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-9)  # directions only
                ax.quiver(grid[:, 0], grid[:, 1], vectors[:, 0], vectors[:, 1], color=color, alpha=0.7,
                          scale=30, width=0.004)  # fmt: skip
            level = payload["datasets"][name]["levels"][column]
            ax.set_title(f"{name}, σ = {level['sigma']:g}\ncos {level['cosine_outside_hole']:.2f} out / "
                         f"{level['cosine_in_hole']:.2f} in hole", fontsize=8)  # fmt: skip
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_aspect("equal")
    fig.suptitle("learned (red) vs exact (blue) score directions; gray: data", fontsize=9)
    fig.tight_layout()
    return fig


def reproduce_sigma_study(cfg, compose=None) -> dict:
    """`python reproduce.py sigma_study output_dir=DIR`: results.json, table.md and sigma_study.png."""
    report = Report(cfg)
    payload = report.settings_study(run, plot_sigma_study, "sigma_study.png")
    payload.pop("fields"), payload.pop("grid")  # large; the figure shows them
    for dataset in payload["datasets"].values():
        dataset.pop("data")
    s = cfg.reproduce.settings
    columns = ["dataset", "σ", "cosine(learned, exact) outside the hole", "cosine in the hole",
               "learned points into the hole", "exact points into the hole"]  # fmt: skip
    rows = [
        [f"{name} ({d['num_points']} points)", f"{r['sigma']:g}", f"{r['cosine_outside_hole']:.2f}",
         f"{r['cosine_in_hole']:.2f}", f"{r['learned_into_hole']:.0%}", f"{r['exact_into_hole']:.0%}"]
        for name, d in payload["datasets"].items()
        for r in d["levels"]
    ]  # fmt: skip
    note = (
        f"Data uniform in [−1, 1]² outside a disc of radius {s.hole_radius}; one noise-conditioned MLP "
        f"{list(s.hidden_dims)} per dataset, {s.train_steps} Adam steps (lr {s.lr}, batch {s.batch_size}) of "
        f"denoising score matching over the σ levels above; grid {s.grid_size}×{s.grid_size} on [−1.2, 1.2]²; "
        f"seed {s.seed}. {provenance(payload)}"
    )
    return report.write(payload, report.table(columns, rows, note))
