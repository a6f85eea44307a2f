"""MPC step time for batch 1 and batch 16 on the same networks; prints JSON.

One MPC step = one re-plan (planner.mpc.iterations Adam iterations over a planner.mpc.horizon window, warm-
started from the previous plan shifted by a step) plus one true env step. Each timed run executes
STEPS_PER_RUN steps and reports the time per step. Batching tasks should cost far less than 16 solves.

    python benchmarks/planning.py [--ckpt RUN/checkpoints/last.ckpt] [--threads 1] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import hydra
import torch
from _timing import add_machine_arguments, now, print_result, use_machine  # benchmarks/: on sys.path when run
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sgp_lightning.models import SGPSystem
from sgp_lightning.planning import Controller, make_planner
from sgp_lightning.train import instantiate_system

STEPS_PER_RUN = 5
CONF = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf")


def default_system() -> SGPSystem:
    """The default domain's system at its configured sizes, randomly initialised (timing only)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["paths.output_dir=/tmp/unused"])
    env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
    return instantiate_system(cfg, env).eval(), OmegaConf.to_container(cfg.planner, resolve=True)


def time_mpc_step(system, planner_cfg, batch: int, repeats: int) -> list[float]:
    env = system.make_env()
    env.num_tasks = batch
    tasks = env.tasks().to(system.device)
    mpc_iterations = planner_cfg["mpc"]["iterations"]
    # Every step (the first too) runs planner.mpc.iterations, as a warm-started re-plan does.
    planner = make_planner(
        {**planner_cfg, "optimizer": {**planner_cfg["optimizer"], "iterations": mpc_iterations}}
    )
    controller = Controller(system, planner, env)
    times = []
    controller.run(env, tasks.x0, tasks.goal, steps=1)  # warm-up
    for _ in range(repeats):
        start = now(system.device)
        controller.run(env, tasks.x0, tasks.goal, steps=STEPS_PER_RUN)
        times.append((now(system.device) - start) / STEPS_PER_RUN)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint to time (default: the default domain, random init)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed MPC steps per batch size")
    add_machine_arguments(parser)
    args = parser.parse_args()
    device = use_machine(args)
    torch.manual_seed(0)
    if args.ckpt:
        system = SGPSystem.load_from_checkpoint(args.ckpt)
        _, planner_cfg = default_system()
    else:
        system, planner_cfg = default_system()
    system = system.to(device)
    results = {}
    for batch in (1, 16):
        times = time_mpc_step(system, planner_cfg, batch, args.repeats)
        results[f"batch_{batch}"] = {
            "step_median_s": statistics.median(times),
            "step_min_s": min(times),
            "runs": times,
        }
    t1, t16 = results["batch_1"]["step_median_s"], results["batch_16"]["step_median_s"]
    print_result("mpc_step", system.device, {
        "domain": system.domain,
        "mpc_iterations": planner_cfg["mpc"]["iterations"],
        "mpc_horizon": planner_cfg["mpc"]["horizon"],
        "beta": planner_cfg["beta"],
        **results,
        "ratio_batch16_over_batch1": t16 / t1,
        "speedup_vs_16_separate_solves": 16 * t1 / t16,
    })  # fmt: skip


if __name__ == "__main__":
    main()
