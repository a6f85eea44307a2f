"""A tuning sweep planned as separate solves (one per β) vs one stacked solve; prints JSON.

For each experiment, a randomly initialised system at the experiment's sizes plans its tasks open loop with
SGP at every β of a grid (the pit: pit_beta_sweep's 8 values; cart-pole-small: the 5 of its tuning grid), and
with the methods that differ only in β (sgp, vanilla, data_landing), through `OpenLoopTasks.evaluate_all`
with `stack=False` (one solve per β, as reproduce tuned before) and `stack=True` (one batched solve). Both
are timed in the same run, alternating, and the largest difference of their achieved costs is reported.
`hopper_small` (D4RL hopper at d4rl_size=small) runs MPC episodes instead (`MPCEpisodes`, `stack_episodes`):
SGP at the D4RL tuning grid's 6 β, and sgp + vanilla; the difference reported is of the episodes' returns.

    python benchmarks/tuning.py [--experiments pit cartpole_small hopper_small] [--iterations 200]
        [--repeats 3] [--episodes 10] [--episode-steps 20] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import hydra
import torch
from _timing import add_machine_arguments, now, print_result, use_machine  # benchmarks/: on sys.path when run

from sgp_lightning.envs.mujoco import MujocoEnv
from sgp_lightning.planning import MPCEpisodes, OpenLoopTasks, make_planner
from sgp_lightning.planning.config import compose, planner_config
from sgp_lightning.train import instantiate_system

# experiment → (its planner set, the β grid of its sweep)
GRIDS = {
    "pit": (
        "default",
        [0.0, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0],
    ),  # conf/reproduce/pit_beta_sweep.yaml
    "cartpole_small": ("cartpole_small", [0.03, 0.1, 0.3, 1.0, 3.0]),  # conf/reproduce/cartpole_small.yaml
    "hopper_small": ("d4rl", [10.0, 100.0, 1000.0, 1e4, 1e5, 1e6]),  # the D4RL entries' SGP tuning grid
}
# experiments that are not a conf/experiment name alone
OVERRIDES = {"hopper_small": ["experiment=d4rl/hopper_medium", "d4rl_size=small"]}


def random_system(experiment: str, device: torch.device):
    """The experiment's system at its configured sizes, randomly initialised (timing only), on `device`,
    and its env."""
    overrides = OVERRIDES.get(experiment, [f"experiment={experiment}"])
    cfg = compose("train", [*overrides, "paths.output_dir=/tmp/unused"])
    env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
    return instantiate_system(cfg, env).to(device).eval(), env


def time_both(system, env, planners: dict, repeats: int, episodes: dict | None = None) -> dict:
    """Median seconds of evaluate_all with separate and with stacked solves, and their largest difference
    (of achieved costs; with `episodes`, MPCEpisodes' arguments, of the episodes' returns)."""
    times = {False: [], True: []}
    outcome = {}
    for _ in range(repeats):
        for stack in (False, True):  # alternating, so both see the same machine load
            evaluator = (
                OpenLoopTasks(stack=stack) if episodes is None else MPCEpisodes(**episodes, stack=stack)
            )
            start = now(system.device)
            evaluations = evaluator.evaluate_all(system, env, planners, seed=0)
            times[stack].append(now(system.device) - start)
            outcome[stack] = torch.stack([
                torch.as_tensor(ev.cost_achieved if episodes is None else ev.returns) for ev in evaluations
            ])  # fmt: skip
    separate, stacked = statistics.median(times[False]), statistics.median(times[True])
    return {
        "plans": len(planners),
        "separate_s": separate,
        "stacked_s": stacked,
        "speedup": separate / stacked,
        f"max_abs_diff_{'cost_achieved' if episodes is None else 'return'}": float(
            (outcome[False] - outcome[True]).abs().max()
        ),
        "separate_runs_s": times[False],
        "stacked_runs_s": times[True],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=["pit", "cartpole_small"], choices=list(GRIDS))
    parser.add_argument("--iterations", type=int, default=200, help="Adam iterations per solve")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each way")
    parser.add_argument("--episodes", type=int, default=10, help="hopper_small: episodes per β (D4RL's 10)")
    parser.add_argument("--episode-steps", type=int, default=20, help="hopper_small: steps per episode")
    add_machine_arguments(parser)
    args = parser.parse_args()
    device = use_machine(args)
    torch.manual_seed(0)
    results = {}
    for experiment in args.experiments:
        planner_set, grid = GRIDS[experiment]
        system, env = random_system(experiment, device)
        # a gymnasium MuJoCo domain runs MPC episodes with the planner set's iterations (planner.mpc);
        # the others plan open loop with --iterations
        episodes, shrink = None, {"optimizer": {"iterations": args.iterations}}
        if isinstance(env, MujocoEnv):
            episodes = {"num_episodes": args.episodes, "episode_steps": args.episode_steps, "seed": 0}
            shrink = {}

        def planner(name, beta=None, planner_set=planner_set, shrink=shrink):
            config = planner_config(name, planner_set, shrink if beta is None else {**shrink, "beta": beta})
            return make_planner({**config, "name": name if beta is None else f"{name}@beta={beta:g}"})

        methods = ("sgp", "vanilla") if episodes else ("sgp", "vanilla", "data_landing")
        results[experiment] = {
            **({"tasks": len(env.tasks()), "iterations": args.iterations} if episodes is None else episodes),
            "beta_grid": time_both(
                system, env, {f"beta={b:g}": planner("sgp", b) for b in grid}, args.repeats, episodes
            ),
            "methods": time_both(system, env, {m: planner(m) for m in methods}, args.repeats, episodes),
        }
    print_result("tuning_sweep", device, results)


if __name__ == "__main__":
    main()
