"""Why vanilla MBRL scores ≈ 1.8 on every hopper dataset and seed (docs/results.md, D4RL): step one episode with
each method's MPC on the true Hopper-v5 and record, per control step, what the plan believed and what happened.

    python scripts/vanilla_d4rl_diagnostic.py RUN/checkpoints/last.ckpt DATA.hdf5 [--methods vanilla sgp]
        [--seed 100000] [--steps 60] [--output diagnostic.json]

RUN is a D4RL training run (e.g. DIR/runs/medium/seed_0 of `python reproduce.py d4rl_hopper_small`) and DATA
its dataset file (DIR/data/hopper-medium-v5.hdf5). Per method it prints, over the steps it survives:
- the share of action components at the action-space bound (|a| ≥ 0.99), beside the dataset's share;
- the learned reward of each executed (x, u) beside the true reward, and the plan's predicted return;
- the one-step model error ‖x̂' − x'‖ (raw units) of the executed action;
- the distance of each executed (x, u) to its nearest dataset pair, in units of the data's std per dimension,
  beside the same distance for held-in dataset pairs' typical spacing (median nearest-neighbour distance of
  1000 dataset pairs to the rest).
The JSON holds the per-step arrays.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgp_lightning import Controller  # noqa: E402
from sgp_lightning.data.d4rl import read_dataset  # noqa: E402
from sgp_lightning.distance import nearest_distance  # noqa: E402
from sgp_lightning.utils import set_threads  # noqa: E402


def data_pairs(path: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The dataset's (x, u) pairs scaled by their std per dimension, the scale, and the share of action
    components at the bound."""
    data = read_dataset(path)
    pairs = torch.as_tensor(np.concatenate([data["observations"], data["actions"]], 1), dtype=torch.float32)
    scale = pairs.std(0).clamp_min(1e-6)
    at_bound = float((np.abs(data["actions"]) >= 0.99).mean())
    return pairs / scale, scale, at_bound


def episode(ckpt: str, method: str, seed: int, steps: int, pairs, scale) -> dict:
    controller = Controller.from_checkpoint(ckpt, planner=method)
    reward_model = controller.system.reward
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=seed)
    controller.reset()
    rows = {
        key: []
        for key in ("action", "true_reward", "learned_reward", "plan_return", "model_error", "distance")
    }
    for _ in range(steps):
        action = controller.act(obs.astype(np.float32))
        plan = controller.last_plan
        x = torch.as_tensor(obs, dtype=torch.float32)[None]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        with torch.no_grad():
            if plan is not None:  # a planning method: its belief about this step
                planned_u = plan.actions[:, 0]
                rows["learned_reward"].append(float(reward_model(x[:, None], planned_u[:, None])[0, 0]))
                rows["plan_return"].append(float(-plan.cost_planned[0]))
                predicted = controller.problem.dynamics(x, planned_u)[0].numpy()
                rows["model_error"].append(float(np.linalg.norm(predicted - next_obs)))
            pair = torch.as_tensor(np.concatenate([obs, action]), dtype=torch.float32)[None] / scale
            rows["distance"].append(float(nearest_distance(pair, pairs)[0]))
        rows["action"].append(np.asarray(action, dtype=float).tolist())
        rows["true_reward"].append(float(reward))
        obs = next_obs
        if terminated or truncated:
            break
    actions = np.asarray(rows["action"])
    return {
        "method": method,
        "steps_survived": len(actions),
        "fell": bool(terminated),
        "return": float(np.sum(rows["true_reward"])),
        "actions_at_bound": float((np.abs(actions) >= 0.99).mean()),
        "mean_true_reward": float(np.mean(rows["true_reward"])),
        "mean_learned_reward": float(np.mean(rows["learned_reward"])) if rows["learned_reward"] else None,
        "mean_plan_return": float(np.mean(rows["plan_return"])) if rows["plan_return"] else None,
        "mean_model_error": float(np.mean(rows["model_error"])) if rows["model_error"] else None,
        "mean_distance_to_data": float(np.mean(rows["distance"])),
        "per_step": rows,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("data")
    parser.add_argument("--methods", nargs="+", default=["vanilla", "sgp"])
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--output", default="vanilla_d4rl_diagnostic.json")
    args = parser.parse_args(argv)
    set_threads(1)
    torch.manual_seed(0)
    pairs, scale, data_at_bound = data_pairs(args.data)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randperm(len(pairs), generator=generator)[:1000]
    rest = torch.ones(len(pairs), dtype=torch.bool)
    rest[sample] = False
    spacing = float(nearest_distance(pairs[sample], pairs[rest]).median())
    results = [episode(args.ckpt, m, args.seed, args.steps, pairs, scale) for m in args.methods]
    payload = {"checkpoint": args.ckpt, "data": args.data, "seed": args.seed, "max_steps": args.steps,
               "data_actions_at_bound": data_at_bound, "data_median_nearest_distance": spacing,
               "methods": results}  # fmt: skip
    Path(args.output).write_text(json.dumps(payload, indent=1))
    print(f"dataset: {data_at_bound:.1%} of action components at the bound; median nearest-pair distance "
          f"{spacing:.3g} (std units)")  # fmt: skip
    header = "| method | steps (fell) | return | actions at bound | learned r / true r per step | plan's predicted return | one-step model error | distance to data |"
    print(header + "\n|" + "---|" * 8)
    for r in results:
        fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
        print(f"| {r['method']} | {r['steps_survived']} ({'yes' if r['fell'] else 'no'}) | {r['return']:.1f} | "
              f"{r['actions_at_bound']:.0%} | {fmt(r['mean_learned_reward'])} / {r['mean_true_reward']:.3g} | "
              f"{fmt(r['mean_plan_return'])} | {fmt(r['mean_model_error'])} | {r['mean_distance_to_data']:.3g} |")  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
