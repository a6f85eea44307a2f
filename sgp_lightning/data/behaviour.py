"""Train the behaviour policies that generate D4RL-style `medium` and `expert` data.

    python -m sgp_lightning.data.behaviour env=hopper total_steps=300000 output_dir=DIR [seed=0]

Trains SAC (stable-baselines3, default hyperparameters) on the gymnasium v5 env. Every `eval_every`
steps the actor is exported as a plain torch policy file and its sampled-action return is measured on
`eval_episodes` seeded episodes (the data is collected with sampled actions, so that is the return that
matters). At the end it picks:
- medium: the snapshot whose measured return is closest to the task's D4RL medium level, and
- expert: the snapshot with the highest measured return (the best policy this budget affords),
measures both again on fresh seeds, and writes `<env>_medium.pt` and `<env>_expert.pt` with that return
in their metadata (`chosen.json` sums it up). Each snapshot's record is appended to
`output_dir/training_log.jsonl` as it is taken, then the choice (`{"env", "chosen", "minutes"}`).
Copy the two policy files to `sgp_lightning/data/policies/`, and the log as `<env>_training_log.jsonl`,
to commit them. `choose_only=true` repeats the choice from an existing `output_dir/snapshots` and appends
it to the log (without minutes). Training refuses a folder that already holds snapshots, so a choice
never mixes two runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sgp_lightning.data.policies import TanhGaussianPolicy, load_policy, save_policy
from sgp_lightning.data.rollout import evaluate_policy
from sgp_lightning.envs.mujoco import MujocoTask, mujoco_task
from sgp_lightning.errors import require
from sgp_lightning.utils import clean_errors, cli_options, set_threads

DEFAULTS = {
    "env": "hopper",  # halfcheetah | hopper | walker2d
    "total_steps": 300_000,  # SAC environment steps
    "eval_every": 10_000,  # steps between snapshots
    "eval_episodes": 10,  # episodes per snapshot evaluation (sampled actions)
    "learning_starts": 10_000,  # random steps before SAC updates (rl-zoo's MuJoCo setting)
    "seed": 0,
    "threads": 1,  # torch threads: small MLPs run fastest on 1 thread on a shared CPU
    "output_dir": "behaviour_policies",
    "choose_only": False,  # skip training: choose medium / expert again from output_dir/snapshots
}


def train_behaviour_policies(cfg) -> dict:
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    task = mujoco_task(cfg.env)
    require(cfg.total_steps > cfg.learning_starts, "total_steps must exceed learning_starts")
    out = Path(cfg.output_dir)
    earlier = sorted((out / "snapshots").glob("step_*.pt"))
    require(  # the choice looks at every snapshot in the folder: another run's would be mixed in
        not earlier,
        f"{out / 'snapshots'} already holds {len(earlier)} snapshots from an earlier run: pass another "
        "output_dir, or choose_only=true to choose among them",
    )
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    (out / "training_log.jsonl").write_text("")  # this run's log, not a previous run's in the same folder
    snapshots: list[dict] = []
    started = time.time()

    class Snapshot(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % cfg.eval_every == 0:
                policy = TanhGaussianPolicy.from_sb3_actor(self.model.actor)
                returns = evaluate_policy(task, policy, cfg.eval_episodes, seed=10_000 + cfg.seed)
                record = {
                    "step": self.num_timesteps,
                    "return_mean": float(returns.mean()),
                    "return_std": float(returns.std()),
                    "minutes": (time.time() - started) / 60,
                }
                path = out / "snapshots" / f"step_{self.num_timesteps:08d}.pt"
                save_policy(policy, path, _metadata(task, cfg, record))
                snapshots.append(record)
                _log(out, record)
            return True

    model = SAC(
        "MlpPolicy",
        gym.make(task.gym_id),
        seed=int(cfg.seed),
        learning_starts=int(cfg.learning_starts),
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=int(cfg.total_steps), callback=Snapshot())
    require(len(snapshots) > 0, f"no snapshot was taken: eval_every={cfg.eval_every} > total_steps")
    summary = {"env": task.name, "snapshots": snapshots, "train_minutes": (time.time() - started) / 60}
    return {**summary, **choose_policies(cfg, started)}


def _log(out: Path, record: dict) -> None:
    """One JSON line on stdout and in output_dir/training_log.jsonl (stdout also carries MuJoCo's warnings)."""
    line = json.dumps(record)
    print(line, flush=True)
    with open(out / "training_log.jsonl", "a") as log:
        log.write(line + "\n")


def choose_policies(cfg, started: float | None = None) -> dict:
    """Pick medium and expert among the snapshots in output_dir/snapshots, then measure the chosen two again
    on `eval_episodes` fresh seeds: the best of many snapshots scored on the same seeds is biased upward, so
    the stored return is the fresh one (the selection return is kept as `selection_return_mean`)."""
    task = mujoco_task(cfg.env)
    out = Path(cfg.output_dir)
    paths = sorted((out / "snapshots").glob("step_*.pt"))
    require(paths, f"no snapshots in {out / 'snapshots'}: train first (without choose_only)")
    snapshots = [{"path": path, **load_policy(path)[1]} for path in paths]
    chosen = {
        "medium": min(snapshots, key=lambda s: abs(s["return_mean"] - task.medium_return)),
        "expert": max(snapshots, key=lambda s: s["return_mean"]),
    }
    summary = {"chosen": {}}
    for level, snapshot in chosen.items():
        policy, metadata = load_policy(snapshot["path"])
        returns = evaluate_policy(task, policy, cfg.eval_episodes, seed=20_000 + cfg.seed)
        metadata = {
            **metadata,
            "level": level,
            "selection_return_mean": metadata["return_mean"],
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "normalized_score": float(task.normalized_score(returns.mean())),
        }
        save_policy(policy, out / f"{task.name}_{level}.pt", metadata)
        summary["chosen"][level] = {
            k: metadata[k] for k in ("train_step", "selection_return_mean", "return_mean")
        }
    (out / "chosen.json").write_text(json.dumps(summary, indent=2))
    steps = {level: chosen["train_step"] for level, chosen in summary["chosen"].items()}
    minutes = {"minutes": (time.time() - started) / 60} if started is not None else {}  # training's
    _log(out, {"env": task.name, "chosen": steps, **minutes})
    return summary


def _metadata(task: MujocoTask, cfg, record: dict) -> dict:
    import stable_baselines3

    return {
        "env": task.name,
        "gym_id": task.gym_id,
        "algorithm": f"SAC (stable-baselines3 {stable_baselines3.__version__}, default hyperparameters)",
        "train_seed": int(cfg.seed),
        "train_step": int(record["step"]),
        "return_mean": record["return_mean"],
        "return_std": record["return_std"],
        "eval_episodes": int(cfg.eval_episodes),
        "normalized_score": float(task.normalized_score(record["return_mean"])),
    }


def main(argv: list[str] | None = None) -> None:
    with clean_errors():
        cfg = cli_options(DEFAULTS, argv)
        set_threads(cfg.threads)
        summary = choose_policies(cfg) if cfg.choose_only else train_behaviour_policies(cfg)
    print(json.dumps(summary["chosen"]))


if __name__ == "__main__":
    main()
