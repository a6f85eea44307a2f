"""Check a learned score before planning with it (paper D.2.4).

Annealed gradient ascent on log p_σ with the learned score, from random starts in (a widened box around)
the data, level by level from σ_max to σ_min: z ← z + step · σ_k² · s(z, k). A good score model brings the
iterates onto the data; the report gives the share of starts that end within ε of a data pair (normalized
(x, u) space) and the mean distance to the nearest pair, before and after, beside the same ascent with the
exact score of the data (the oracle). The check passes when the learned score's share reaches `threshold`.

    python -m sgp_lightning.analysis.score_check ckpt_path=RUN/checkpoints/last.ckpt [output_dir=DIR]
        [num_starts=1000] [epsilon=0.1] [threshold=0.9] [steps_per_level=20] [step_size=0.5]

It rebuilds the run's dataset from RUN/config.yaml (saved by train.py). Exit code 0: pass, 1: fail.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sgp_lightning.distance import ExactScoreModel, nearest_distance
from sgp_lightning.errors import require
from sgp_lightning.normalization import Normalizer
from sgp_lightning.train import instantiate_env_and_data
from sgp_lightning.utils import clean_errors, cli_options, set_threads, write_json

DEFAULTS = {
    "ckpt_path": None,  # SGPSystem checkpoint (required)
    "output_dir": None,  # where score_check.json and score_check.png go (default: next to the run)
    "num_starts": 1000,  # random starts, one batch
    "margin": 0.5,  # starts uniform in the data's normalized bounding box widened by this much per side
    "steps_per_level": 20,  # ascent steps at each noise level
    "step_size": 0.5,  # z += step_size · σ² · s(z): 1 jumps to the denoised mean, smaller moves part way
    "epsilon": 0.1,  # a start "lands" when it ends within ε of a data pair (normalized units)
    "threshold": 0.9,  # pass when at least this share of starts lands
    "oracle_points": 20000,  # data pairs behind the exact-score reference (a seeded subset)
    "seed": 0,
    "threads": 1,
}


@torch.no_grad()
def anneal_ascent(
    score, starts: torch.Tensor, steps_per_level: int, step_size: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """z ← z + step_size · σ_k² · s(z, k) for every level k, `steps_per_level` times each; with a 0/1
    `mask` (broadcast over z), only the coordinates it marks move (ascent on the conditional density)."""
    z = starts.clone()
    for level, sigma in enumerate(score.schedule.sigmas.tolist()):
        for _ in range(steps_per_level):
            update = step_size * sigma**2 * score(z, level)
            z = z + (update if mask is None else update * mask)
    return z


def check_score(score, data: torch.Tensor, cfg) -> dict:
    """Learned and exact-score ascent from the same starts; `data` is the normalized training pairs (N, d)."""
    require(data.dim() == 2 and len(data) > 0, "the score check needs a non-empty set of (x, u) pairs")
    generator = torch.Generator().manual_seed(int(cfg.seed))
    low, high = data.min(0).values - cfg.margin, data.max(0).values + cfg.margin
    starts = low + (high - low) * torch.rand(int(cfg.num_starts), data.shape[1], generator=generator)
    subset = data[torch.randperm(len(data), generator=generator)[: int(cfg.oracle_points)]]
    oracle = ExactScoreModel(
        subset, score.schedule, pair_norm=Normalizer(subset.shape[1])
    )  # identity: normalized
    results = {}
    for name, model in (("learned", score), ("exact", oracle)):
        ends = anneal_ascent(model, starts, int(cfg.steps_per_level), float(cfg.step_size))
        distance = nearest_distance(ends, data)
        results[name] = {
            "landed": float((distance <= cfg.epsilon).float().mean()),
            "mean_distance": float(distance.mean()),
            "ends": ends,
        }
    before = nearest_distance(starts, data)
    return {
        "starts": starts,
        "before": {
            "landed": float((before <= cfg.epsilon).float().mean()),
            "mean_distance": float(before.mean()),
        },
        **results,
        "passed": results["learned"]["landed"] >= cfg.threshold,
    }


def _training_pairs(ckpt_path: Path, system) -> torch.Tensor:
    """The run's training pairs (x, u), rebuilt from RUN/config.yaml, normalized like the score's input."""

    run_dir = ckpt_path.resolve().parent.parent
    config = run_dir / "config.yaml"
    require(
        config.is_file(),
        f"{config} not found: the score check rebuilds the run's data from train.py's config.yaml",
    )
    cfg = OmegaConf.load(config)
    _, datamodule = instantiate_env_and_data(cfg)
    datamodule.setup("fit")
    train = datamodule.train_data
    return system.score.normalize_pair(train["x"], train["u"]).detach().flatten(1)


def plot_score_check(report: dict, data: torch.Tensor, max_data: int = 5000):
    """Starts, learned-score ends and exact-score ends over the data, projected on the first two coordinates."""
    from sgp_lightning.plotting import plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    shown = data[:max_data]
    for ax, name in zip(axes, ("learned", "exact"), strict=True):
        ax.scatter(shown[:, 0], shown[:, 1], s=2, color="lightgray", label="data")
        ax.scatter(
            report["starts"][:, 0], report["starts"][:, 1], s=3, color="tab:blue", alpha=0.3, label="starts"
        )
        ends = report[name]["ends"]
        ax.scatter(ends[:, 0], ends[:, 1], s=4, color="tab:red", label="ends")
        ax.set_title(f"{name} score: {report[name]['landed']:.0%} land within ε")
        ax.set_xlabel("z₀ (normalized)")
    axes[0].set_ylabel("z₁ (normalized)")
    axes[0].legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    with clean_errors():
        cfg = cli_options(DEFAULTS, argv)
        set_threads(cfg.threads)
        require(cfg.ckpt_path is not None, "ckpt_path= is required (an SGPSystem checkpoint)")
        require(0 <= cfg.threshold <= 1 and cfg.epsilon > 0, "threshold must be in [0, 1] and epsilon > 0")
        from sgp_lightning.models import SGPSystem

        ckpt = Path(cfg.ckpt_path)
        system = SGPSystem.load_from_checkpoint(ckpt)
        score = system.require_part("score").eval()
        require(len(score.pair_shape) == 1, "the score check works on vector (x, u) pairs, not images")
        data = _training_pairs(ckpt, system)
        report = check_score(score, data, cfg)
        out = Path(cfg.output_dir) if cfg.output_dir else ckpt.resolve().parent.parent / "score_check"
        summary = {
            "checkpoint": str(ckpt),
            "passed": report["passed"],
            "threshold": float(cfg.threshold),
            "epsilon": float(cfg.epsilon),
            "before": report["before"],
            **{
                name: {k: report[name][k] for k in ("landed", "mean_distance")}
                for name in ("learned", "exact")
            },
            "sigmas": [round(s, 5) for s in score.schedule.sigmas.tolist()],
            "settings": OmegaConf.to_container(cfg),
        }
        write_json(out / "score_check.json", summary)
        from sgp_lightning.plotting import save_figure

        save_figure(plot_score_check(report, data), out / "score_check.png")
        print(json.dumps({k: summary[k] for k in ("passed", "before", "learned", "exact")}))
        print(
            f"score check {'PASSED' if report['passed'] else 'FAILED'}: {report['learned']['landed']:.1%} of "
            f"{cfg.num_starts} starts land within ε = {cfg.epsilon} of the data (threshold "
            f"{cfg.threshold:.0%}; exact score: {report['exact']['landed']:.1%}); wrote {out}"
        )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
