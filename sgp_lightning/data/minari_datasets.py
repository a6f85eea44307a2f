"""Minari datasets (arrow or HDF5 storage) through the `minari` package, offline only.

A Minari dataset is a directory `<root>/<id>/data/` holding `metadata.json` and the episodes (arrow: one
folder per episode; HDF5: `main_data.hdf5`). Each episode has T+1 observations and T actions, rewards,
terminations and truncations. `read_minari` turns one into D4RL's flat layout (`observations`,
`next_observations`, … one row per step, episode after episode) and keeps its metadata (reference scores,
`env_spec`, the dataset id, the action space's bounds); `write_minari` writes arrays in D4RL's layout as a
Minari dataset. Nothing is downloaded: datasets are read from a directory, or by id from
`$MINARI_DATASETS_PATH` (default ~/.minari/datasets).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from sgp_lightning.errors import SGPError, require

STORAGES = ("arrow", "hdf5")
_MINARI_ID = re.compile(r"[\w.-]+-v\d+")  # Minari's (dataset_name)-v(version), without a namespace


def minari_dataset_dir() -> Path:
    """Where Minari keeps its datasets: $MINARI_DATASETS_PATH or ~/.minari/datasets."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets")).expanduser()


def is_minari_dataset(path: Path) -> bool:
    """Whether `path` is a Minari dataset directory (it holds `data/metadata.json`)."""
    return (Path(path) / "data" / "metadata.json").is_file()


def read_minari(path: str | Path) -> dict:
    r"""
    A local Minari dataset in D4RL's layout.

    Args:
        path (`str` or `Path`):
            The dataset's directory (the one holding `data/metadata.json`).

    Returns:
        `dict`: `observations` and `next_observations` `(N, n)`, `actions` `(N, m)`, `rewards` `(N,)`,
        `terminals` and `timeouts` `(N,)` (Minari's terminations and truncations), N the total number of
        steps; and `metadata`: the dataset's `metadata.json` as plain values (e.g. `ref_min_score`,
        `ref_max_score`, `env_spec`, `dataset_id`), with `action_low` / `action_high` (lists) when its
        action space is a bounded Box, and `source`. Not yet validated (`validate_dataset` does that).
    """
    import gymnasium as gym
    from minari import MinariDataset

    path = Path(path)
    try:
        dataset = MinariDataset(path / "data")
    except Exception as err:  # noqa: BLE001 - a broken dataset fails inside minari in many ways; one message
        raise SGPError(f"{path} is not a readable Minari dataset ({type(err).__name__}: {err})") from err
    for what, space in (("observation", dataset.observation_space), ("action", dataset.action_space)):
        require(
            isinstance(space, gym.spaces.Box),
            f"{path}: its {what} space is {type(space).__name__}; only flat Box spaces are supported",
        )
    # Minari reads one episode at a time (its API): this loop runs once, when the dataset is loaded.
    episodes = list(dataset.iterate_episodes())
    require(episodes, f"{path} is a Minari dataset with no episodes")
    observations = [np.asarray(e.observations).reshape(len(e.observations), -1) for e in episodes]
    data = {
        "observations": np.concatenate([o[:-1] for o in observations]),
        "next_observations": np.concatenate([o[1:] for o in observations]),
        "actions": np.concatenate([np.asarray(e.actions).reshape(len(e.actions), -1) for e in episodes]),
        "rewards": np.concatenate([np.asarray(e.rewards) for e in episodes]),
        "terminals": np.concatenate([np.asarray(e.terminations) for e in episodes]),
        "timeouts": np.concatenate([np.asarray(e.truncations) for e in episodes]),
    }
    metadata = json.loads((path / "data" / "metadata.json").read_text())
    space = dataset.action_space
    if np.isfinite(space.low).all() and np.isfinite(space.high).all():
        metadata["action_low"], metadata["action_high"] = (
            space.low.ravel().tolist(),
            space.high.ravel().tolist(),
        )
    metadata["source"] = f"minari:{metadata.get('dataset_id', path.name)}"
    data["metadata"] = metadata
    return data


@contextlib.contextmanager
def _datasets_root(root: Path):
    """minari writes under $MINARI_DATASETS_PATH: point it at `root` for one write."""
    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = saved


def write_minari(
    path: str | Path,
    data: dict,
    metadata: dict,
    gym_id: str,
    ref_min_score: float,
    ref_max_score: float,
    storage: str = "arrow",
) -> Path:
    r"""
    Write arrays in D4RL's layout as a Minari dataset, with `minari.create_dataset_from_buffers`.

    The dataset is written in a temporary directory beside `path` and renamed, so a killed collection never
    leaves half a dataset.

    Args:
        path (`str` or `Path`):
            The dataset's directory; its name is the dataset id (`<name>-v<version>`, e.g. `hopper-medium-v5`).
        data (`dict`):
            `observations`, `next_observations` `(N, n)`, `actions` `(N, m)`, `rewards`, `terminals`,
            `timeouts` `(N,)`; rows episode after episode, every episode ending at a terminal or timeout row.
        metadata (`dict`):
            Plain values added to the dataset's metadata (e.g. the collector's generator, policy, returns).
        gym_id (`str`):
            The gymnasium env the data comes from (recorded as `env_spec` and `eval_env_spec`; gives the
            action space).
        ref_min_score (`float`), ref_max_score (`float`):
            Reference returns of a random and an expert policy (D4RL's), for normalized scores.
        storage (`str`, *optional*, defaults to `"arrow"`):
            `arrow` or `hdf5`: Minari's storage format.

    Returns:
        `Path`: the dataset's directory.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    require(storage in STORAGES, f"minari storage must be one of {STORAGES}, got {storage!r}")
    path = Path(path).expanduser().resolve()  # minari resolves relative paths against its own root
    require(
        _MINARI_ID.fullmatch(path.name) is not None,
        f"a Minari dataset's directory name is its id and must look like NAME-v0, got {path.name!r}",
    )
    require(not path.exists(), f"{path} already exists; Minari datasets are never overwritten")
    ends = np.flatnonzero(data["terminals"] | data["timeouts"]) + 1
    require(
        len(ends) > 0 and ends[-1] == len(data["rewards"]),
        "every episode must end at a terminal or timeout row to be written as a Minari dataset",
    )
    pieces = {key: np.split(np.asarray(data[key]), ends[:-1]) for key in (*_STEP_KEYS, "next_observations")}
    # Minari's API takes one buffer per episode: T+1 observations (the last successor appended).
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=np.concatenate([pieces["observations"][i], pieces["next_observations"][i][-1:]]),
            actions=pieces["actions"][i],
            rewards=pieces["rewards"][i].astype(np.float64),
            terminations=pieces["terminals"][i].astype(bool),
            truncations=pieces["timeouts"][i].astype(bool),
            infos={},
        )
        for i in range(len(ends))
    ]
    obs_dim = data["observations"].shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with _datasets_root(staging), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(author|code_permalink).*", category=UserWarning)
            dataset = minari.create_dataset_from_buffers(
                path.name,
                buffers,
                env=gym_id,
                eval_env=gym_id,
                algorithm_name=str(metadata.get("algorithm") or metadata.get("generator", "")),
                author="sgp-lightning",
                description=f"{metadata.get('generator', '')}: {metadata.get('policy', '')} data in {gym_id}",
                # float32 observations, as in D4RL's files (gymnasium's MuJoCo spaces say float64)
                observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                ref_min_score=float(ref_min_score),
                ref_max_score=float(ref_max_score),
                data_format=storage,
            )
            dataset.storage.update_metadata({k: _plain(v) for k, v in metadata.items()})
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


_STEP_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
