"""The committed behaviour policies' own D4RL scores on the tables' evaluation episodes, with sampled actions
(as the datasets were collected) and with the mean action (as BC acts), for reading the D4RL tables
(docs/results.md): a method that stays on a single policy's data can be expected near these figures.

    python scripts/behaviour_policy_scores.py [--envs hopper halfcheetah walker2d] [--episodes 10]
        [--seed 100000] [--output scores.json]

Episode i starts from the env seeded with `seed + i`, as the tables' episode i does (`--seed 100000`, the
tables' first episode seed); the sampled actions draw from a generator seeded with `seed`. Prints JSON: per env
and policy (medium, expert), the mean return and the normalised score's mean and std over episodes, for each
way of acting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgp_lightning.data.policies import POLICY_DIR, Policy, load_policy  # noqa: E402
from sgp_lightning.data.rollout import evaluate_policy  # noqa: E402
from sgp_lightning.envs.mujoco import mujoco_task  # noqa: E402
from sgp_lightning.utils import set_threads  # noqa: E402


class MeanAction(Policy):
    """A SAC policy acting with tanh(mean), as a BC policy fit to its data would."""

    def __init__(self, policy):
        super().__init__()
        self.policy, self.action_dim = policy, policy.action_dim

    def act(self, obs, generator=None):
        return self.policy.act(obs, generator, deterministic=True)


def scores(env: str, episodes: int, seed: int) -> dict:
    """{`<policy>_<acting>`: return and normalised score over `episodes` episodes} for one env's policies."""
    task = mujoco_task(env)
    result = {}
    for kind in ("medium", "expert"):
        policy, _ = load_policy(POLICY_DIR / f"{env}_{kind}.pt")
        for acting, actor in (("sampled", policy), ("mean_action", MeanAction(policy))):
            returns = evaluate_policy(task, actor, episodes, seed)  # (episodes,)
            normalized = task.normalized_score(returns)  # (episodes,)
            result[f"{kind}_{acting}"] = {
                "return_mean": float(returns.mean()),
                "normalized_score": float(normalized.mean()),
                "normalized_score_std": float(normalized.std()),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah", "walker2d"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100000, help="the first episode's env seed")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    set_threads(1)
    result = {"episodes": args.episodes, "seed": args.seed}
    result.update({env: scores(env, args.episodes, args.seed) for env in args.envs})
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
