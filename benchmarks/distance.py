"""Exact smoothed distance and score (`sgp_lightning.distance.softmin`) against the dense reference, side
by side in one run; prints JSON.

The dense reference is the authors' approach: one (B, N, n) tensor of differences x_b − x_i, ½‖·‖² by an
einsum with a unit metric, a log-sum-exp over the data, and the score by autograd through all of it.
Both get the same seeded data (N rows of standard normal n-vectors, float32) and the same B queries (data
rows moved by a standard normal step), and return d_σ², the score and the nearest point.

Memory: each variant's first call on the full data runs in a fresh subprocess, after a call on 100 rows
that loads the libraries. Its peak is the process's peak RSS during the call minus its RSS before it
(Linux: the peak mark is reset just before the call), so data and libraries do not count, and the
allocator has cached nothing; with `--device cuda`, the peak of allocated device memory over what was
allocated before (benchmarks/_timing.py). Time: in this process, the two take turns after one warm-up call each, so
a machine shared with other jobs slows both alike; medians of `--repeats` calls. `--large` rows (1M by
default) run ours only: the reference would need 4·B·N·n bytes per (B, N, n) tensor (3.6 GB at 1M).

    python benchmarks/distance.py [--rows 100000] [--large 1000000] [--dim 14] [--queries 64]
        [--sigma 0.1] [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from _timing import (  # benchmarks/: on sys.path when run
    add_machine_arguments,
    now,
    peak_memory_mib,
    print_result,
    reset_peak_memory,
    use_machine,
)

from sgp_lightning.distance import softmin

VARIANTS = ("ours", "dense_reference")


def dense_reference(x: torch.Tensor, data: torch.Tensor, sigma: float):
    """d_σ² (B,), score (B, n), nearest ½‖x − x_i‖² (B,) and its index through one (B, N, n) tensor."""
    x = x.detach().requires_grad_(True)
    difference = x[:, None, :] - data[None]  # (B, N, n)
    metric = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    half_sq = 0.5 * torch.einsum("bnd,d,bnd->bn", difference, metric, difference)
    distance_sq = -(sigma**2) * torch.logsumexp(-half_sq / sigma**2, 1)
    (gradient,) = torch.autograd.grad(distance_sq.sum(), x)
    nearest_sq, nearest_index = half_sq.detach().min(1)
    return distance_sq.detach(), -gradient / sigma**2, nearest_sq, nearest_index


def ours(x: torch.Tensor, data: torch.Tensor, sigma: float):
    result = softmin(x, data, sigma)
    return result.distance_sq, result.score, result.nearest_sq, result.nearest_index


def problem(rows: int, dim: int, queries: int, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded data (rows, dim) and queries (queries, dim), float32, drawn on the CPU and moved to `device`."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(rows, dim, generator=generator)
    picks = torch.randint(0, rows, (queries,), generator=generator)
    x = data[picks] + torch.randn(queries, dim, generator=generator)
    return x.to(device), data.to(device)


def peak_memory(variant: str, args) -> dict:
    """The variant's first call on `args.rows` rows, in this (fresh) process: its peak memory over what was
    in use before (CPU: RSS; CUDA: allocated bytes)."""
    device = use_machine(args)
    function = {"ours": ours, "dense_reference": dense_reference}[variant]
    x, data = problem(args.rows, args.dim, args.queries, device)
    function(x, data[:100], args.sigma)  # load the libraries and kernels
    before = reset_peak_memory(device)
    start = now(device)
    function(x, data, args.sigma)
    seconds = now(device) - start
    return {"peak_memory_mib": peak_memory_mib(device, before), "first_call_s": seconds}


def in_subprocess(variant: str, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--rows", str(rows), "--memory-of", variant],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{variant} at {rows} rows failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def turns(functions: dict, x: torch.Tensor, data: torch.Tensor, sigma: float, repeats: int) -> tuple:
    """Median seconds per call of each function (taking turns after one warm-up call each), every call's
    seconds, and each function's output."""
    outputs = {name: function(x, data, sigma) for name, function in functions.items()}
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = now(x.device)
            function(x, data, sigma)
            times[name].append(now(x.device) - start)
    return {name: statistics.median(t) for name, t in times.items()}, times, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="data rows N of the side-by-side run")
    parser.add_argument("--large", type=int, default=1_000_000, help="data rows of the ours-only run")
    parser.add_argument("--dim", type=int, default=14, help="dimension n (hopper's (x, u) pairs: 14)")
    parser.add_argument("--queries", type=int, default=64, help="queries B")
    parser.add_argument("--sigma", type=float, default=0.1, help="smoothing σ")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant")
    add_machine_arguments(parser)
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one variant
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(peak_memory(args.memory_of, args)))
        return

    device = use_machine(args)
    memory = {variant: in_subprocess(variant, args.rows) for variant in VARIANTS}
    x, data = problem(args.rows, args.dim, args.queries, device)
    medians, runs, outputs = turns(
        {"ours": ours, "dense_reference": dense_reference}, x, data, args.sigma, args.repeats
    )
    (d_ours, s_ours, _, i_ours), (d_ref, s_ref, _, i_ref) = outputs["ours"], outputs["dense_reference"]
    side_by_side = {
        variant: {"median_s": medians[variant], "runs_s": runs[variant], **memory[variant]}
        for variant in VARIANTS
    }
    large_memory = in_subprocess("ours", args.large)
    large_x, large_data = problem(args.large, args.dim, args.queries, device)
    large_median, large_runs, _ = turns({"ours": ours}, large_x, large_data, args.sigma, args.repeats)
    print_result("distance", device, {
        "dim": args.dim,
        "queries": args.queries,
        "sigma": args.sigma,
        "repeats": args.repeats,
        "rows": args.rows,
        **side_by_side,
        "speedup_dense_over_ours": medians["dense_reference"] / medians["ours"],
        "memory_ours_over_dense": memory["ours"]["peak_memory_mib"]
        / memory["dense_reference"]["peak_memory_mib"],
        "agreement": {
            "max_rel_diff_score": float(((s_ours - s_ref).norm(dim=1) / s_ref.norm(dim=1)).max()),
            "max_abs_diff_distance_sq": float((d_ours - d_ref).abs().max()),
            "same_nearest_index": bool(torch.equal(i_ours, i_ref)),
        },
        "large": {
            "rows": args.large,
            "ours": {"median_s": large_median["ours"], "runs_s": large_runs["ours"], **large_memory},
            "dense_reference_tensor_mib": 4 * args.queries * args.large * args.dim / 2**20,
        },
    })  # fmt: skip


if __name__ == "__main__":
    main()
