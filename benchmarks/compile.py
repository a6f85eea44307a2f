"""Eager vs captured (`planner.optimizer.compile`) SGP planning in Controller.act, side by side in one run;
prints JSON.

Cases (random weights, seeded: timing only):

- `pit`: the default domain's system at its config sizes (`python train.py`'s: dynamics and reward 2 × 128,
  score 3 × 256) with its SGP planner (a 10-step window, 50 Adam iterations per re-plan, 300 in the first
  solve); observations are the domain's first task start states.
- `hopper`: D4RL hopper at the paper's sizes (experiment=d4rl/hopper_medium: 4 × 1024 MLPs; `--hopper-size
  small` for d4rl_size=small) with planner_set=d4rl's SGP (T = 5, 50 Adam iterations per solve, paper
  C.2); observations are seeded standard-normal states (the random system has no data).

For each case and each mode of `--modes` (a torch.compile mode), two controllers per batch size plan the
same observations: one eager, one captured. Each makes a first act (a full solve from the neutral plan; the
captured one compiles in it), then `--repeats` warm-started acts, one MPC re-plan each, the eager and
captured controllers and the batch sizes taking turns, so a machine shared with other jobs slows all alike.
Per batch size it reports each first act (`compile_s`: the captured one's minus the eager one's), the
median and minimum of the warm-started acts, `eager_over_captured` (the ratio of the medians; > 1: the
capture is faster), and the largest |difference| between the two controllers' planned actions after the
first act (the same solve from the same state) and after the last.

Each batch size compiles its own static-shape graph (dynamo's automatic dynamic shapes off), as a control
loop with a fixed batch does, and the compile caches are reset between cases and modes.
`recompiles_while_timed` counts frames compiled during the timed acts (0: the capture is reused);
`cudagraph_skips` counts graphs inductor could not run as CUDA graphs (reduce-overhead, max-autotune).

    python benchmarks/compile.py [--cases pit,hopper] [--modes default] [--repeats 5] [--batches 1,16]
        [--hopper-size paper] [--mpc-iterations N] [--backend inductor] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch._dynamo
from _timing import add_machine_arguments, now, print_result, use_machine  # benchmarks/: on sys.path when run
from torch._dynamo.utils import counters

from sgp_lightning import Controller

VARIANTS = ("eager", "captured")


def build_case(case: str, hopper_size: str):
    """(system, the SGP planner's config, observations(batch) → (batch, *state_shape)) of a case."""
    if case == "pit":
        from planning import default_system

        system, planner = default_system()
        env = system.make_env()

        def task_starts(batch: int) -> torch.Tensor:
            env.num_tasks = batch
            return env.tasks().x0

        return system, planner, task_starts
    from d4rl_mpc import build

    system, planners = build("hopper", hopper_size)
    state_shape = tuple(system.make_env().state_shape)

    def normal_states(batch: int) -> torch.Tensor:
        return torch.randn(batch, *state_shape, generator=torch.Generator().manual_seed(0))

    return system, planners["sgp"], normal_states


def with_settings(planner: dict, compile_mode: str | None, backend: str, mpc_iterations: int | None) -> dict:
    """The planner config with optimizer.compile and compile_backend set (and planner.mpc.iterations, if
    given)."""
    optimizer = {**planner["optimizer"], "compile": compile_mode, "compile_backend": backend}
    planner = {**planner, "optimizer": optimizer}
    if mpc_iterations:
        planner["mpc"] = {**planner["mpc"], "iterations": mpc_iterations}
    return planner


def progress(message: str) -> None:
    """A line on stderr (stdout carries only the JSON), so a run cut short shows how far it got."""
    print(f"[compile.py] {message}", file=sys.stderr, flush=True)


def timed_act(controller: Controller, obs: torch.Tensor) -> float:
    start = now(obs.device)
    controller.act(obs)
    return now(obs.device) - start


def largest_difference(controllers: dict) -> float:
    """max |eager − captured| over the latest plans' actions."""
    eager, captured = (controllers[v].last_plan.actions for v in VARIANTS)
    return float((eager - captured).abs().max())


def compare(system, planner: dict, observe, mode: str, args) -> dict:
    """Eager against `mode`'s capture for each batch size, side by side (see the module docstring)."""
    torch._dynamo.reset()
    counters.clear()
    batches, repeats = [int(b) for b in args.batches.split(",")], args.repeats
    configs = {
        v: with_settings(planner, mode if v == "captured" else None, args.backend, args.mpc_iterations)
        for v in VARIANTS
    }
    controllers = {batch: {v: Controller(system, configs[v]) for v in VARIANTS} for batch in batches}
    obs = {batch: observe(batch).to(system.device) for batch in batches}
    results = {batch: {v: {} for v in VARIANTS} for batch in batches}
    for batch in batches:
        for variant in VARIANTS:
            results[batch][variant]["first_act_s"] = timed_act(controllers[batch][variant], obs[batch])
        results[batch]["max_abs_action_diff_first_plan"] = largest_difference(controllers[batch])
        first = {v: round(results[batch][v]["first_act_s"], 2) for v in VARIANTS}
        progress(f"{system.domain} {mode} batch {batch}: first act (s) {first}")
    compiled = counters["frames"]["ok"]
    runs = {batch: {v: [] for v in VARIANTS} for batch in batches}
    for _ in range(repeats):
        for batch in batches:
            for variant in VARIANTS:
                runs[batch][variant].append(timed_act(controllers[batch][variant], obs[batch]))
    out = {}
    for batch in batches:
        result = results[batch]
        for variant in VARIANTS:
            times = runs[batch][variant]
            result[variant].update(act_median_s=statistics.median(times), act_min_s=min(times), runs_s=times)
        eager, captured = result["eager"], result["captured"]
        out[f"batch_{batch}"] = {
            **result,
            "compile_s": captured["first_act_s"] - eager["first_act_s"],
            "eager_over_captured": eager["act_median_s"] / captured["act_median_s"],
            "max_abs_action_diff_last_plan": largest_difference(controllers[batch]),
        }
    medians = {b: {v: round(out[b][v]["act_median_s"], 4) for v in VARIANTS} for b in out}
    progress(f"{system.domain} {mode}: median act (s) {medians}")
    return {
        **out,
        "recompiles_while_timed": counters["frames"]["ok"] - compiled,
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="pit,hopper", help="comma-separated, of pit, hopper")
    parser.add_argument(
        "--modes", default="default", help="comma-separated torch.compile modes (default, reduce-overhead, …)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed warm-started acts per controller")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--hopper-size", default="paper", choices=["paper", "small"], help="d4rl_size")
    parser.add_argument(
        "--mpc-iterations", type=int, default=None, help="Adam iterations per re-plan (default: the config's)"
    )
    parser.add_argument(
        "--backend",
        default="inductor",
        help="optimizer.compile_backend (aot_eager: capture without generating kernels, a quick check)",
    )
    add_machine_arguments(parser)
    args = parser.parse_args()
    unknown = set(args.cases.split(",")) - {"pit", "hopper"}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}: use pit, hopper")
    device = use_machine(args)
    # each batch size its own static graph, as in a control loop with a fixed batch
    torch._dynamo.config.automatic_dynamic_shapes = False
    cases = {}
    for case in args.cases.split(","):
        torch.manual_seed(0)
        system, planner, observe = build_case(case, args.hopper_size)
        system = system.to(device).eval()
        cases[case] = {
            "domain": system.domain,
            "hidden_dims": {
                part: system.hparams[part]["hidden_dims"] for part in ("dynamics", "reward", "score")
            },
            "planner": planner["name"],
            "beta": planner["beta"],
            "mpc_horizon": planner["mpc"]["horizon"],
            "mpc_iterations": args.mpc_iterations or planner["mpc"]["iterations"],
            "first_solve_iterations": planner["optimizer"]["iterations"],
            "modes": {mode: compare(system, planner, observe, mode, args) for mode in args.modes.split(",")},
        }
    print_result(
        "compile",
        device,
        {"threads": args.threads, "repeats": args.repeats, "compile_backend": args.backend, "cases": cases},
    )


if __name__ == "__main__":
    main()
