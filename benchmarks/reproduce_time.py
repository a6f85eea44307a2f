"""A reproduce entry's wall time at two commits, taking turns on the same machine; prints JSON.

Each commit is checked out into a temporary `git worktree` (this checkout's files are left alone). The entry
runs from scratch (a fresh output_dir) as `python reproduce.py ENTRY output_dir=DIR OVERRIDES…` with
`OMP_NUM_THREADS=1`, first at `--before`, then at `--after`, `--repeats` times over. Each run's wall time is
the whole process's; the JSON gives every run, the medians and after / before, and whether every run's
results.json holds the same numbers (all but times, paths and the machine). OUT/progress.json holds each
finished run's time as it finishes. Without ENTRY or OVERRIDES it runs a shrunken hopper-medium D4RL entry
with 2 workers (about 10 minutes a run on 2 cores): 20k transitions, 4 epochs, 5 evaluation episodes of 100
steps, the entry's own tuning protocol.

`--after-override KEY=VALUE` (repeatable) goes to the `--after` runs only: settings an older commit does not
have, such as `reproduce.workers=2`, or `reproduce.tune=null` to give a newer commit an older entry's work.

    python benchmarks/reproduce_time.py --before REV [--after HEAD] [--repeats 2] [--entry d4rl_hopper_small]
        [--out DIR] [--after-override KEY=VALUE …] [-- OVERRIDE …]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sgp_lightning.analysis.common import results_numbers

ROOT = Path(__file__).resolve().parent.parent
# a D4RL entry at seconds-per-piece sizes, with the proportions of the full runs (tuning longer than training)
SHRUNKEN_HOPPER = [
    "reproduce.datasets=[medium]",
    "reproduce.workers=2",
    "progress=false",
    "reproduce.collect.n=20000",
    "reproduce.collect.num_envs=4",
    "reproduce.train_overrides=['d4rl_size=small','trainer.max_epochs=4']",
    "reproduce.plan_overrides=['planner_set=d4rl','num_tasks=5','episode_steps=100']",
]


def shared_leaves(a, b, path: str = "") -> tuple[int, list[str]]:
    """Compare two results.json payloads where both have a field: (how many numbers and strings were
    compared, the paths of those that differ). For commits whose results.json gained fields since, where
    `results_numbers` equality cannot hold although every number both write is the same."""
    if isinstance(a, dict) and isinstance(b, dict):
        compared, differ = 0, []
        for key in a.keys() & b.keys():
            n, d = shared_leaves(a[key], b[key], f"{path}/{key}")
            compared, differ = compared + n, differ + d
        return compared, differ
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        compared, differ = 0, []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            n, d = shared_leaves(x, y, f"{path}/{i}")
            compared, differ = compared + n, differ + d
        return compared, differ
    return 1, ([] if a == b else [path])


def run_entry(tree: Path, entry: str, overrides: list[str], out: Path) -> dict:
    """One reproduction at `tree` into `out`: its wall seconds, exit code and results.json's numbers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the runs in docs/ (reproduce's num_threads is 1 too)
    command = [sys.executable, "reproduce.py", entry, f"output_dir={out}", *overrides]
    start = time.perf_counter()
    with open(f"{out}.log", "w") as log:
        proc = subprocess.run(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    results = out / "results.json"
    payload = json.loads(results.read_text()) if proc.returncode == 0 and results.is_file() else None
    return {
        "seconds": seconds,
        "returncode": proc.returncode,
        "numbers": results_numbers(payload),
        "log": f"{out}.log",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--after", default="HEAD", help="the commit measured (default: HEAD)")
    parser.add_argument("--entry", default="d4rl_hopper_small", help="a conf/reproduce entry")
    parser.add_argument("--repeats", type=int, default=2, help="runs per commit, taking turns")
    parser.add_argument("--out", default=None, help="where the runs write (default: a temporary folder)")
    parser.add_argument(
        "--after-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for the --after runs only (repeatable)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="reproduce overrides (default: the shrunken hopper-medium)"
    )
    args = parser.parse_args()
    overrides = args.overrides or (SHRUNKEN_HOPPER if args.entry == "d4rl_hopper_small" else [])
    out = Path(args.out or tempfile.mkdtemp(prefix="reproduce_time_"))
    # a run folder left from an earlier call would be reused piece by piece: near-zero times, equal numbers
    folders = [f"{name}_{i + 1}" for name in ("before", "after") for i in range(args.repeats)]
    left = [folder for folder in [*folders, "tree_before", "tree_after"] if (out / folder).exists()]
    if left:
        sys.exit(f"error: {out} already holds {left}: give a new --out, so every run starts from scratch")
    commits = {
        name: subprocess.run(
            ["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        for name, rev in (("before", args.before), ("after", args.after))
    }
    trees = {name: out / f"tree_{name}" for name in commits}
    for name, commit in commits.items():
        subprocess.run(["git", "worktree", "add", "--detach", str(trees[name]), commit], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
    runs = {name: [] for name in commits}
    try:
        for repeat in range(args.repeats):
            for name in commits:
                print(f"{name} ({commits[name][:7]}), run {repeat + 1}", file=sys.stderr, flush=True)
                own = overrides + (args.after_override if name == "after" else [])
                runs[name].append(run_entry(trees[name], args.entry, own, out / f"{name}_{repeat + 1}"))
                # each finished run's time kept on disk, so a run cut short (a session's end) loses none
                progress = {commit: [{k: run[k] for k in ("seconds", "returncode", "log")} for run in done]
                            for commit, done in runs.items()}  # fmt: skip
                (out / "progress.json").write_text(
                    json.dumps({"commits": commits, "runs": progress}, indent=1)
                )
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    every = [run["numbers"] for name in commits for run in runs[name]]
    medians = {name: statistics.median(run["seconds"] for run in runs[name]) for name in commits}
    result = {
        "benchmark": "reproduce_time",
        "entry": args.entry,
        "overrides": overrides,
        "after_overrides": args.after_override,
        "commits": commits,
        "seconds": {name: [round(run["seconds"], 1) for run in runs[name]] for name in commits},
        "returncodes": {name: [run["returncode"] for run in runs[name]] for name in commits},
        "median_seconds": {name: round(seconds, 1) for name, seconds in medians.items()},
        "after_over_before": round(medians["after"] / medians["before"], 3),
        "same_numbers": all(n is not None and n == every[0] for n in every),
        # every run against the first before-run, where both write a field (results.json may have grown)
        "shared_numbers": [
            {"compared": compared, "differ": differ[:10], "num_differ": len(differ)}
            for compared, differ in (shared_leaves(every[0], n) for n in every[1:] if n is not None)
        ],
        "output": str(out),
    }
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads: the machine record states the runs' threads
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _timing import print_result

    print_result("reproduce_time", "cpu", {k: v for k, v in result.items() if k != "benchmark"})


if __name__ == "__main__":
    main()
