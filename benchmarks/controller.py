"""Controller.act time for 16 observations against 1, on the same networks, side by side; prints JSON.

One timed `act` is one warm-started re-plan (planner.mpc.iterations Adam iterations over the
planner.mpc.horizon window, started from the previous plan shifted by a step), as every act after the
first is in a control loop. Each controller makes one warm-up act (the first, full solve) first; then the
two batch sizes take turns, one act each per repeat, so a machine shared with other jobs slows both alike.
Planning 16 observations in one batch should cost far less than 16 times one.

    python benchmarks/controller.py [--threads 1] [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import add_machine_arguments, now, print_result, use_machine  # benchmarks/: on sys.path when run
from planning import default_system

from sgp_lightning import Controller

BATCHES = (1, 16)


def observations(system, batch: int) -> torch.Tensor:
    """The first `batch` start states of the domain's tasks; one observation unbatched, (n,)."""
    env = system.make_env()
    env.num_tasks = batch
    x0 = env.tasks().x0.to(system.device)
    return x0[0] if batch == 1 else x0


def time_act(controller: Controller, obs: torch.Tensor) -> float:
    start = now(obs.device)
    controller.act(obs)
    return now(obs.device) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed warm-started acts per batch size")
    add_machine_arguments(parser)
    args = parser.parse_args()
    device = use_machine(args)
    torch.manual_seed(0)
    system, planner_cfg = default_system()
    system = system.to(device)
    controllers = {batch: Controller(system, planner_cfg) for batch in BATCHES}
    obs = {batch: observations(system, batch) for batch in BATCHES}
    for batch in BATCHES:
        controllers[batch].act(obs[batch])  # warm-up: the first act, a full solve
    runs = {batch: [] for batch in BATCHES}
    for _ in range(args.repeats):
        for batch in BATCHES:
            runs[batch].append(time_act(controllers[batch], obs[batch]))
    results = {
        f"batch_{batch}": {
            "act_median_s": statistics.median(times),
            "act_min_s": min(times),
            "runs": times,
        }
        for batch, times in runs.items()
    }
    t1, t16 = results["batch_1"]["act_median_s"], results["batch_16"]["act_median_s"]
    payload = {
        "domain": system.domain,
        "planner": planner_cfg["name"],
        "mpc_iterations": planner_cfg["mpc"]["iterations"],
        "mpc_horizon": planner_cfg["mpc"]["horizon"],
        "beta": planner_cfg["beta"],
        "repeats": args.repeats,
        **results,
        "batch16_over_batch1": t16 / t1,
    }
    print_result("controller_act", system.device, payload)


if __name__ == "__main__":
    main()
