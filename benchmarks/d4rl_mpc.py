"""Seconds per MPC control step on a D4RL domain at the paper's sizes, for 1 and 16 parallel episodes; prints JSON.

One control step = one solve (T = 5, 50 Adam iterations, as in paper C.2) for every running episode in one
batch, plus one step of the gymnasium vector env. Networks are the paper's 4 × 1024 MLPs, randomly
initialised (timing only). Vanilla MBRL (β = 0, no score call) runs beside SGP in the same process as the
reference, so `sgp_over_vanilla` is the cost of the score term; `batch16_over_batch1` shows what batching
the episodes buys (16 would mean no gain).

    python benchmarks/d4rl_mpc.py [--env hopper] [--size paper|small] [--steps 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
from _timing import add_machine_arguments, print_result, use_machine  # benchmarks/: on sys.path when run
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sgp_lightning.planning.episodes import run_episodes
from sgp_lightning.train import instantiate_system

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def build(env: str, size: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment=d4rl/{env}_medium", f"d4rl_size={size}"])
        plan_cfg = compose("plan", overrides=["planner_set=d4rl", "ckpt_path=unused"])
    planners = OmegaConf.to_container(plan_cfg.planners, resolve=True)
    env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
    return instantiate_system(cfg, env).eval(), planners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper", choices=["hopper", "halfcheetah", "walker2d"])
    parser.add_argument("--size", default="paper", choices=["paper", "small"], help="d4rl_size network sizes")
    parser.add_argument(
        "--steps", type=int, default=5, help="control steps timed per run (after one warm-up)"
    )
    add_machine_arguments(parser)
    parser.add_argument("--methods", default="vanilla,sgp,ensemble", help="planners from planner_set=d4rl")
    args = parser.parse_args()
    device = use_machine(args)
    system, planners = build(args.env, args.size)
    system = system.to(device)
    env = system.make_env()
    results: dict[str, dict] = {}
    for method in args.methods.split(","):
        results[method] = {}
        for episodes in (1, 16):
            run_episodes(system, env, planners[method], num_episodes=episodes, max_steps=1, seed=0)  # warm-up
            evaluation = run_episodes(
                system, env, planners[method], num_episodes=episodes, max_steps=args.steps, seed=0
            )
            results[method][f"episodes_{episodes}"] = {
                "seconds_per_step": evaluation.seconds / evaluation.steps,
                "steps": evaluation.steps,
            }
        one, sixteen = (results[method][f"episodes_{n}"]["seconds_per_step"] for n in (1, 16))
        results[method]["batch16_over_batch1"] = sixteen / one
    ratios = {}
    if "sgp" in results and "vanilla" in results:
        ratios = {
            f"sgp_over_vanilla_episodes_{n}": results["sgp"][f"episodes_{n}"]["seconds_per_step"]
            / results["vanilla"][f"episodes_{n}"]["seconds_per_step"]
            for n in (1, 16)
        }
    print_result("d4rl_mpc", device, {
        "env": env.task.gym_id,
        "size": args.size,
        "hidden_dims": {part: system.hparams[part]["hidden_dims"] for part in ("dynamics", "reward", "score")},
        "horizon": planners["sgp"]["mpc"]["horizon"],  # T and iterations per control step (planner.mpc)
        "iterations": planners["sgp"]["mpc"]["iterations"],
        "threads": args.threads,
        "methods": results,
        **ratios,
    })  # fmt: skip


if __name__ == "__main__":
    main()
