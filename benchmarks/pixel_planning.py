"""Seconds per planner iteration and peak memory on the pixel single integrator at the paper's sizes
(experiment=pixel_integrator: U-Nets [64, 128, 128] with attention, T = 15 control images of 32×32,
an ensemble of 10, CEM on its first 5 members); prints JSON.

Each method runs in its own subprocess so its peak memory is its own: what planning added at its peak
over what the process held after building the networks (CUDA: the allocator's peak allocated bytes; CPU:
the process's peak RSS, with the peak mark reset on Linux; benchmarks/_timing.py). Side by side, the
same ensemble iteration with a Python loop over members instead of vmap is timed as the reference for the
vectorised ensemble.

    python benchmarks/pixel_planning.py [--tasks 8] [--population 100] [--iterations 3] [--device auto]
        [--experiment pixel_integrator] [--threads 1]

Networks are randomly initialised: the cost of an iteration does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from _timing import add_machine_arguments, now, peak_memory_mib, print_result, reset_peak_memory, use_machine

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sgp", "vanilla", "ensemble", "ensemble_loop_reference", "cem")


def build(experiment: str, device: torch.device):
    import hydra
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sgp_lightning.train import instantiate_system

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"experiment={experiment}", "paths.output_dir=/tmp/unused"]
        )
        plan_cfg = compose(config_name="plan", overrides=[f"planner_set={experiment}", "ckpt_path=unused"])
    env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
    system = instantiate_system(cfg, env).to(device).eval()
    return system, OmegaConf.to_container(plan_cfg.planners, resolve=True)


def looped_ensemble_problem(system, env, cfg, horizon):
    """The ensemble planner's problem with members evaluated one by one (the reference, benchmark only)."""
    from sgp_lightning.planning import ShootingProblem
    from sgp_lightning.planning.penalties import EnsemblePenalty

    model = system.ensemble
    members = [model.net.member(k) for k in range(model.num_members)]

    def predict(x, u):
        inputs = model.normalized_input(x, u)
        return torch.stack([member(inputs) for member in members])

    class LoopedPenalty(EnsemblePenalty):
        def rollout(self, x0, actions):
            states, penalty = [x0], x0.new_zeros(x0.shape[0])
            for t in range(actions.shape[1]):
                predictions = predict(states[-1], actions[:, t])
                penalty = penalty + predictions.var(0, unbiased=False).flatten(1).sum(1)
                states.append(model.to_state(states[-1], actions[:, t], predictions.mean(0)))
            return torch.stack(states, 1), self.weighted(penalty)

    def mean_dynamics(x, u):
        return model.to_state(x, u, predict(x, u).mean(0))

    return ShootingProblem(
        mean_dynamics, env.cost, LoopedPenalty(system, cfg["beta"]), horizon, env.neutral_action()
    )


def run_one(method: str, args) -> dict:
    from sgp_lightning.planning import frozen, make_planner

    device = use_machine(args)
    system, planners = build(args.experiment, device)
    env = system.make_env()
    env.num_tasks = args.tasks
    tasks = env.tasks().to(device)
    cfg = planners["ensemble" if method == "ensemble_loop_reference" else method]
    if method == "cem":
        cfg = {**cfg, "optimizer": {**cfg["optimizer"], "population": args.population}}
    planner = make_planner(cfg)
    with frozen(system):
        if method == "ensemble_loop_reference":
            problem = looped_ensemble_problem(system, env, cfg, env.horizon)
        else:
            problem = planner.problem(system, env, env.horizon)
        before = reset_peak_memory(device)  # after building the networks, before any planning
        planner.solve(problem, tasks.x0, tasks.goal, iterations=1)  # warm-up (allocator, kernels)
        start = now(device)
        planner.solve(problem, tasks.x0, tasks.goal, iterations=args.iterations)
        seconds = (now(device) - start) / args.iterations
    peak = peak_memory_mib(device, before)
    return {"seconds_per_iteration": seconds, "peak_memory_mib": peak, "device": str(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="pixel_integrator")
    parser.add_argument("--tasks", type=int, default=8, help="tasks planned in one batch")
    parser.add_argument("--population", type=int, default=100, help="CEM candidates per task")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per method")
    add_machine_arguments(parser, device="auto")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # internal: one method
    args = parser.parse_args()
    if args.method:
        print(json.dumps(run_one(args.method, args)))
        return

    use_machine(args)  # as in each method's process, so machine_info reports the threads
    results = {}
    for method in METHODS:
        forwarded = sys.argv[1:]
        out = subprocess.run(
            [sys.executable, __file__, *forwarded, "--method", method],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"{method} failed:\n{out.stderr[-2000:]}")
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    sgp = results["sgp"]["seconds_per_iteration"]
    for result in results.values():
        result["time_vs_sgp"] = result["seconds_per_iteration"] / sgp
    results["ensemble"]["vmap_speedup_vs_loop"] = (
        results["ensemble_loop_reference"]["seconds_per_iteration"]
        / results["ensemble"]["seconds_per_iteration"]
    )
    print_result("pixel_planning", results["sgp"]["device"], {
        "experiment": args.experiment,
        "tasks": args.tasks,
        "horizon": 15,
        "decision_variables_per_task": 15 * 32 * 32,
        "cem_population": args.population,
        "timed_iterations": args.iterations,
        "methods": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
