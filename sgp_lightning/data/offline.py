"""Your own offline dataset, without a simulator: load, validate, infer shapes and action bounds, split by episode.

A dataset is one of
- a D4RL-layout HDF5 file (`observations`, `actions`, `next_observations`, `rewards`, `terminals`, `timeouts`);
- a Minari dataset (a directory, or an id in $MINARI_DATASETS_PATH), arrow or HDF5 storage;
- an `.npz` of arrays, read with `allow_pickle=False`;
- arrays passed from Python ([`register_arrays`], d3rlpy's `MDPDataset` convention).

`.npz` files and arrays follow d3rlpy: `observations` (N, n), `actions` (N, m), `rewards` (N,), `terminals`
(N,) and optional `timeouts` (N,), one row per step in time order, an episode ending at a terminal or
timeout row (the last row always ends one). Without `next_observations` (N, n), x' of a row is the next
row's observation, and the last row of each episode, whose successor was not recorded, is dropped. With
it, every row is a transition, as in D4RL's files.

Action bounds: a declared range (`action_low`, `action_high`, or a Minari dataset's action space) is checked
against every action; without one, the bounds are the per-dimension min and max of the data's actions. The
planner's actions are clamped to them (`OfflineEnv.normalize_action`), so plans never ask for actions the
data's range does not cover.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sgp_lightning.data.d4rl import episode_ids, read_dataset, validate_dataset
from sgp_lightning.errors import SGPError, require

ARRAY_KEYS = ("observations", "actions", "rewards", "terminals")  # required in an .npz or from Python
OPTIONAL_KEYS = ("timeouts", "next_observations")
ARRAYS_PREFIX = "arrays:"

# Datasets loaded in this process, by source (a file's path with its size and mtime, or an arrays key).
# The PlanningCallback rebuilds the env at every plan, and this spares it re-reading the file.
_LOADED: dict[tuple, dict] = {}


def register_arrays(
    observations,
    actions,
    rewards,
    terminals,
    timeouts=None,
    next_observations=None,
    metadata: dict | None = None,
) -> str:
    r"""
    Hand arrays from Python to the offline domain (d3rlpy's `MDPDataset(observations, actions, rewards,
    terminals, timeouts)` convention): they are validated now and kept in this process under a key derived
    from their contents, which `OfflineEnv(dataset=key)` and `domain.env.dataset=key` accept.

    Args:
        observations (array-like of shape `(N, n)`):
            The observation of each step.
        actions (array-like of shape `(N, m)`):
            The action taken at each step.
        rewards (array-like of shape `(N,)`):
            The reward of each step.
        terminals (array-like of shape `(N,)`, bool or 0/1):
            The episode ended at this step (a terminal state).
        timeouts (array-like of shape `(N,)`, bool or 0/1, *optional*):
            The episode was cut at this step (a time limit). Defaults to none but the last row.
        next_observations (array-like of shape `(N, n)`, *optional*):
            The observation after each step; without it, the next row's (see the module's docstring).
        metadata (`dict`, *optional*):
            Plain values kept with the data.

    Returns:
        `str`: the key, `arrays:<hash of the contents>`. Not saved anywhere: a checkpoint trained on it plans
        anywhere, but evaluating it against its held-out episodes needs the same arrays registered again
        (or saved with `np.savez` and passed as a file).
    """
    arrays = {"observations": observations, "actions": actions, "rewards": rewards, "terminals": terminals}
    if timeouts is not None:
        arrays["timeouts"] = timeouts
    if next_observations is not None:
        arrays["next_observations"] = next_observations
    data = from_arrays(arrays, "arrays passed from Python", metadata)
    digest = hashlib.sha1()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(np.asarray(arrays[key])).tobytes())
    key = f"{ARRAYS_PREFIX}{digest.hexdigest()[:16]}"
    _LOADED[(key,)] = data
    return key


def load_offline(source: str) -> dict:
    r"""
    Load and validate an offline dataset (cached in this process).

    Args:
        source (`str`):
            A `.npz` path, a D4RL-layout HDF5 path or name, a Minari dataset directory or id, or a key from
            [`register_arrays`].

    Returns:
        `dict`: D4RL's arrays (`observations`, `actions`, `next_observations` float32, `rewards`, `terminals`,
        `timeouts`), one row per transition, plus `episodes` (N,) int64, the episode index of each row
        (0, 1, … in row order), and `metadata` (a Minari dataset's, with its action bounds if declared).
    """
    source = str(source)
    if source.startswith(ARRAYS_PREFIX):
        key = (source,)
        require(
            key in _LOADED,
            f"dataset {source!r} names arrays registered in another Python process; register them again "
            "(sgp_lightning.data.offline.register_arrays) or save them with np.savez and pass the file",
        )
        return _LOADED[key]
    path = Path(source).expanduser()
    key = (str(path.resolve()), *_stamp(path)) if path.is_file() else (source,)
    if key not in _LOADED:
        if path.suffix == ".npz":
            data = _read_npz(path)
        else:
            data = read_dataset(source)
            data["episodes"] = episode_ids(data)
        _LOADED.clear()  # keep one file's arrays, not every file this process ever read
        _LOADED[key] = data
    return _LOADED[key]


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as handle:
            arrays = {key: handle[key] for key in handle.files}
    except (OSError, ValueError) as err:  # not a zip, or an object array (which needs pickle)
        raise SGPError(f"{path} is not a readable .npz of numeric arrays ({err})") from err
    return from_arrays(arrays, str(path))


def from_arrays(arrays: dict, source: str, metadata: dict | None = None) -> dict:
    """Arrays in d3rlpy's convention → validated D4RL-layout transitions with `episodes` (see `load_offline`)."""
    missing = [key for key in ARRAY_KEYS if key not in arrays]
    require(
        not missing,
        f"{source} is missing keys {missing}; an offline dataset needs {list(ARRAY_KEYS)} "
        f"(and optionally {list(OPTIONAL_KEYS)})",
    )
    observations = np.asarray(arrays["observations"])
    n = len(observations) if observations.ndim else 0
    given_next = "next_observations" in arrays
    data = {
        **{key: np.asarray(arrays[key]) for key in ARRAY_KEYS},
        "timeouts": np.asarray(arrays["timeouts"]) if "timeouts" in arrays else np.zeros(n, bool),
        # validated with the observations standing in for x' when it is derived from the next row below
        "next_observations": np.asarray(arrays["next_observations"]) if given_next else observations,
        "metadata": dict(metadata or {}),
    }
    data = validate_dataset(data, source)
    data["timeouts"][-1] |= ~data["terminals"][-1]  # the last row ends an episode: a cut one if not terminal
    data["episodes"] = episode_ids(data)
    if given_next:
        return data
    ends = data["terminals"] | data["timeouts"]
    keep = ~ends  # a row's successor is the next row, recorded unless this row ends its episode
    require(
        keep.any(),
        f"{source} has no episodes of two or more steps: without next_observations, every transition needs "
        "the next row of its episode",
    )
    next_observations = np.roll(data["observations"], -1, axis=0)
    out = {key: data[key][keep] for key in ("observations", "actions", "rewards", "terminals", "episodes")}
    out["next_observations"] = next_observations[keep]
    # The row before a dropped end now ends its episode; a dropped terminal keeps its meaning there only
    # as the end of the episode (x' of the kept row is a real successor), so it becomes a timeout.
    last_kept = np.r_[out["episodes"][1:] != out["episodes"][:-1], True]
    out["terminals"] = np.zeros_like(out["terminals"])
    out["timeouts"] = last_kept
    _, out["episodes"] = np.unique(out["episodes"], return_inverse=True)
    out["metadata"] = data["metadata"]
    return out


def check_action_range(data: dict, low, high, source: str) -> None:
    """Refuse actions outside a declared range [low, high] (scalars or one value per action dimension)."""
    actions = data["actions"]
    low = np.broadcast_to(np.asarray(low, dtype=np.float32), actions.shape[1:])
    high = np.broadcast_to(np.asarray(high, dtype=np.float32), actions.shape[1:])
    require((low < high).all(), f"{source}: the declared action range needs low < high, got {low} and {high}")
    bad = ((actions < low) | (actions > high)).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SGPError(
            f"{source}: {int(bad.sum())} of {len(actions)} actions lie outside the declared range "
            f"[{low.tolist()}, {high.tolist()}] (first at row {row}: {actions[row].tolist()})"
        )


def split_episodes(episodes: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    r"""
    Hold out whole episodes for validation and evaluation.

    Args:
        episodes (`np.ndarray` of shape `(N,)`):
            The episode index of each row (0 … E−1).
        val_fraction (`float`):
            Share of the episodes held out, in (0, 1); at least one is held out and one kept.
        seed (`int`):
            Seed of which episodes are held out.

    Returns:
        `np.ndarray` of shape `(N,)`, bool: `True` for rows of held-out episodes.
    """
    require(0 < val_fraction < 1, f"val_fraction must be in (0, 1), got {val_fraction}")
    count = int(episodes.max()) + 1 if len(episodes) else 0
    require(
        count >= 2,
        f"the dataset has {count} episode(s); splitting by episode needs at least 2 (one to train on, one "
        "held out): mark episode ends with terminals or timeouts",
    )
    held_out = min(max(1, round(count * val_fraction)), count - 1)
    chosen = np.random.default_rng(seed).permutation(count)[:held_out]
    return np.isin(episodes, chosen)
