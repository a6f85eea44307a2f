"""How far apart two methods of a D4RL table are, episode by episode (docs/results.md, D4RL sections).

    python scripts/d4rl_paired_comparison.py RUNS [--methods sgp bc] [--checkpoint last]
        [--resamples 10000] [--seed 0] [--output comparison.json]

RUNS is a folder that holds one D4RL dataset's table seeds, each with the episode results its reproduction wrote
(`RUNS/seed_N/plan/methods/results.json` or `RUNS/seed_N/plan_last/results.json`; e.g.
docs/results/d4rl_halfcheetah_small/medium/runs/medium). Within a seed every method is evaluated on the same
episode seeds (the same start states), so the two methods' normalised scores pair up episode by episode. It prints
JSON with, for A − B (A, B = `--methods`):
- per seed: each method's mean score and the mean paired difference;
- `mean_difference`: the table's difference (mean over seeds of the per-seed means);
- `ci95_episodes`: a 95% percentile interval of that difference under a bootstrap that keeps the seeds and
  resamples each seed's episode pairs (how much the 10 episodes per seed leave it uncertain);
- `ci95_seeds_and_episodes`: the same with the seeds resampled too (training seeds also vary);
- `episodes_a_at_least_b`: the share of episode pairs where A scored at least B;
- where the episodes record their lengths (the reproductions' files do): `ended_early`, how many of each method's
  episodes ended before the step limit (a fall, in hopper and walker2d), and `difference_both_full_length`, the
  mean difference over the pairs in which neither ended early (with their number), which separates falling
  from scoring less while upright.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np


def seed_results(runs: Path, checkpoint: str) -> dict[int, dict]:
    """{training seed: its episode results (`methods`, `episode_steps`, …)} for the seeds under `runs`."""
    names = ["plan/methods/results.json"] if checkpoint == "last" else []
    names.append(f"plan_{checkpoint}/results.json")
    found = {}
    for folder in sorted(runs.glob("seed_*")):
        match = re.fullmatch(r"seed_(\d+)", folder.name)
        files = [folder / name for name in names if (folder / name).is_file()]
        if match and files:
            found[int(match.group(1))] = json.loads(files[0].read_text())
    if not found:
        sys.exit(f"error: no seed_N/{' or seed_N/'.join(names)} under {runs}")
    return found


def episode_values(methods: dict, name: str, seed: int, key: str) -> np.ndarray:
    """(E,) one value (`normalized_score`, `length`) of each of a method's episodes."""
    if name not in methods:
        sys.exit(f"error: seed {seed} has no method {name!r}; it has {sorted(methods)}")
    return np.array([episode[key] for episode in methods[name]["per_episode"]])


def early_ends(per_seed: dict[int, dict], a: str, b: str, differences: np.ndarray) -> dict:
    """How many episodes of A and of B ended before the step limit, and A − B over the pairs where neither did."""
    limits = np.array([r["episode_steps"] for r in per_seed.values()])[:, None]  # (S, 1)
    ended = {}
    for name in (a, b):
        lengths = np.stack([episode_values(r["methods"], name, s, "length") for s, r in per_seed.items()])
        ended[name] = lengths < limits  # (S, E)
    both_full = ~(ended[a] | ended[b])
    return {
        "ended_early": {name: int(flags.sum()) for name, flags in ended.items()},
        "difference_both_full_length": float(differences[both_full].mean()) if both_full.any() else None,
        "pairs_both_full_length": int(both_full.sum()),
    }


def compare(runs: Path, a: str, b: str, checkpoint: str, resamples: int, seed: int) -> dict:
    per_seed = seed_results(runs, checkpoint)
    scores_a = [episode_values(r["methods"], a, s, "normalized_score") for s, r in per_seed.items()]
    scores_b = [episode_values(r["methods"], b, s, "normalized_score") for s, r in per_seed.items()]
    if len({len(scores) for scores in scores_a + scores_b}) != 1:
        sys.exit(f"error: {a} and {b} must have the same number of episodes in every seed under {runs}")
    scores_a, scores_b = np.stack(scores_a), np.stack(scores_b)  # (S, E)
    differences = scores_a - scores_b  # (S, E): same seed, same episode seed
    num_seeds, num_episodes = differences.shape
    rng = np.random.default_rng(seed)
    # Resample episode pairs within each seed: (R, S, E) indices, all resamples at once.
    episodes = rng.integers(0, num_episodes, size=(resamples, num_seeds, num_episodes))
    resampled_pairs = np.take_along_axis(np.broadcast_to(differences, episodes.shape), episodes, axis=2)
    within = resampled_pairs.mean(2)  # (R, S): each seed's mean difference in each resample
    seeds = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    across = np.take_along_axis(within, seeds, 1)  # (R, S): the seeds resampled too
    recorded = all("episode_steps" in r for r in per_seed.values())
    return {
        "runs": str(runs),
        "checkpoint": checkpoint,
        "a": a,
        "b": b,
        "per_seed": {
            str(s): {a: float(sa.mean()), b: float(sb.mean()), "difference": float(d.mean())}
            for s, sa, sb, d in zip(per_seed, scores_a, scores_b, differences, strict=True)
        },
        "episodes_per_seed": num_episodes,
        "mean_difference": float(differences.mean(1).mean()),
        "ci95_episodes": np.percentile(within.mean(1), [2.5, 97.5]).tolist(),
        "ci95_seeds_and_episodes": np.percentile(across.mean(1), [2.5, 97.5]).tolist(),
        "episodes_a_at_least_b": float((differences >= 0).mean()),
        "resamples": resamples,
        "bootstrap_seed": seed,
        **(early_ends(per_seed, a, b, differences) if recorded else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="folder with one dataset's seed_N folders")
    parser.add_argument("--methods", nargs=2, default=["sgp", "bc"], metavar=("A", "B"))
    parser.add_argument("--checkpoint", default="last", choices=["last", "best"])
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = compare(args.runs, *args.methods, args.checkpoint, args.resamples, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
