"""Generate offline datasets in D4RL's layout, or as Minari datasets, from gymnasium MuJoCo v5 rollouts.

    python -m sgp_lightning.data.collect env=hopper dataset=random n=100000 [seed=0] [output=PATH]
    python -m sgp_lightning.data.collect env=hopper dataset=random format=minari minari_storage=hdf5

dataset:
- random: uniform random actions (D4RL's random data);
- medium / expert: actions sampled from the committed behaviour policy `sgp_lightning/data/policies/
  <env>_<level>.pt` (or `policy=PATH`), whose return measured when it was chosen is in its metadata;
- medium_expert: medium followed by expert, n rows each (D4RL's medium-expert is 2 × 1M rows).

The file goes to `output`, by default `$D4RL_DATASET_DIR/<env>-<dataset>-v5.hdf5` (~/.d4rl/datasets), where
`datamodule.dataset=<env>-<dataset>-v5` finds it. Its `metadata/*` names the generator, env, policy and
the mean return of the collected whole episodes (the step budget cuts one episode per env copy). Prints a JSON summary.

`format=minari` writes a Minari dataset instead (`minari_storage=arrow` or `hdf5`), by default to
`$MINARI_DATASETS_PATH/<env>-<dataset>-v5` (~/.minari/datasets), with the same metadata plus D4RL's reference
returns (`ref_min_score`, `ref_max_score`) and the env's spec; `minari.load_dataset("<env>-<dataset>-v5")`
and `datamodule.dataset=<env>-<dataset>-v5` both find it there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from sgp_lightning.data.d4rl import (
    INFO_KEYS,
    REQUIRED_KEYS,
    d4rl_dataset_dir,
    episode_returns,
    open_tail,
    write_dataset,
)
from sgp_lightning.data.minari_datasets import STORAGES, minari_dataset_dir, write_minari
from sgp_lightning.data.policies import UniformRandomPolicy, committed_policy_path, load_policy
from sgp_lightning.data.rollout import rollout
from sgp_lightning.envs.mujoco import mujoco_task
from sgp_lightning.errors import require
from sgp_lightning.utils import clean_errors, cli_options, set_threads

DATASETS = ("random", "medium", "expert", "medium_expert")
FORMATS = ("d4rl", "minari")
DEFAULTS = {
    "env": "hopper",  # halfcheetah | hopper | walker2d
    "dataset": "random",  # random | medium | expert | medium_expert
    "n": 1_000_000,  # transitions (per part for medium_expert)
    "num_envs": 10,  # env copies stepped as one batch
    "seed": 0,  # env resets and action sampling
    "policy": None,  # a policy file instead of the committed one (medium / expert)
    "output": None,  # default: $D4RL_DATASET_DIR/<env>-<dataset>-v5.hdf5 (minari: $MINARI_DATASETS_PATH/<env>-<dataset>-v5)
    "format": "d4rl",  # d4rl: one HDF5 file in D4RL's layout | minari: a Minari dataset directory
    "minari_storage": "arrow",  # format=minari: arrow | hdf5
    "threads": 1,
}


def dataset_name(env: str, dataset: str) -> str:
    return f"{env}-{dataset.replace('_', '-')}-v5"


def return_stats(data: dict, cut: np.ndarray) -> dict:
    """Mean and std of the return of whole episodes; the step budget cuts one episode per env copy, and
    those count only when no episode finished at all (then `whole_episodes` is 0)."""
    every, whole = episode_returns(data), episode_returns(data, exclude=cut)
    returns = whole if len(whole) else every
    return {
        "episodes": int(len(every)),
        "whole_episodes": int(len(whole)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
    }


def collect_part(
    env: str, level: str, n: int, num_envs: int, seed: int, policy_path: str | None
) -> tuple[dict, dict]:
    """n transitions from one behaviour policy; returns (arrays, metadata)."""
    task = mujoco_task(env)
    if level == "random":
        policy = UniformRandomPolicy(task.action_dim)
        policy_meta = {"algorithm": "uniform random actions"}
    else:
        policy, policy_meta = load_policy(policy_path or committed_policy_path(env, level))
        require(
            policy_meta.get("env") == env,
            f"the {level} policy was trained on {policy_meta.get('env')!r}, not {env!r}",
        )
    steps_per_env = -(-n // num_envs)
    data = rollout(task, policy, num_envs, steps_per_env, seed)
    data = {key: value[:n] for key, value in data.items()}
    data["cut"] |= open_tail(data["terminals"] | data["timeouts"])  # trimming cuts the last episode
    data["timeouts"][-1] |= data["cut"][-1]
    metadata = {
        "generator": "sgp_lightning.data.collect",
        "env": task.gym_id,
        "policy": level,
        "algorithm": policy_meta.get("algorithm", ""),
        "seed": int(seed),
        **return_stats(data, data["cut"]),
    }
    if "return_mean" in policy_meta:  # the policy's return measured when it was chosen
        metadata["policy_return_mean"] = float(policy_meta["return_mean"])
        metadata["policy_train_step"] = int(policy_meta["train_step"])
    return data, metadata


def collect(cfg) -> dict:
    require(cfg.dataset in DATASETS, f"unknown dataset {cfg.dataset!r}; choose one of {list(DATASETS)}")
    require(int(cfg.n) > 0, f"n must be positive, got {cfg.n}")
    require(int(cfg.num_envs) > 0, f"num_envs must be positive, got {cfg.num_envs}")
    require(cfg.format in FORMATS, f"unknown format {cfg.format!r}; choose one of {list(FORMATS)}")
    require(
        cfg.minari_storage in STORAGES,
        f"unknown minari_storage {cfg.minari_storage!r}; choose one of {list(STORAGES)}",
    )
    started = time.time()
    levels = ["medium", "expert"] if cfg.dataset == "medium_expert" else [cfg.dataset]
    require(
        cfg.policy is None or len(levels) == 1,
        "policy= names one policy; medium_expert uses the committed two",
    )
    parts = [
        collect_part(cfg.env, level, int(cfg.n), int(cfg.num_envs), int(cfg.seed) + 1000 * i, cfg.policy)
        for i, level in enumerate(levels)
    ]
    data = {
        key: np.concatenate([part[0][key] for part in parts]) for key in (*REQUIRED_KEYS, *INFO_KEYS, "cut")
    }
    stats = return_stats(data, data.pop("cut"))
    metadata = {
        **parts[0][1],
        "dataset": dataset_name(cfg.env, cfg.dataset),
        **stats,
    }
    if len(parts) > 1:
        metadata["policy"] = "medium+expert"
        metadata["expert_policy_return_mean"] = parts[1][1]["policy_return_mean"]
        metadata["expert_policy_train_step"] = parts[1][1]["policy_train_step"]
        metadata["expert_return_mean"] = parts[1][1]["return_mean"]
    name = dataset_name(cfg.env, cfg.dataset)
    if cfg.format == "minari":
        task = mujoco_task(cfg.env)
        output = Path(cfg.output) if cfg.output else minari_dataset_dir() / name
        write_minari(
            output, data, metadata, task.gym_id, task.ref_min_score, task.ref_max_score, cfg.minari_storage
        )
    else:
        output = Path(cfg.output) if cfg.output else d4rl_dataset_dir() / f"{name}.hdf5"
        write_dataset(output, data, metadata)
    return {
        "output": str(output),
        "rows": int(len(data["rewards"])),
        **metadata,
        "seconds": round(time.time() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    with clean_errors():
        cfg = cli_options(DEFAULTS, argv)
        set_threads(cfg.threads)
        print(json.dumps(collect(cfg)))


if __name__ == "__main__":
    main()
