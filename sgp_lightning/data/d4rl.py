"""D4RL's HDF5 dataset layout: read (with validation), write, and turn into transitions.

Layout (D4RL MuJoCo v2 files): `observations`, `actions`, `next_observations` (N, ·) float32 (float64 in
the medium-replay files), `rewards` (N,), `terminals` and `timeouts` (N,) bool, `infos/qpos`,
`infos/qvel`, `infos/action_log_probs`, `metadata/*`. Rows are ordered episode by episode; an episode
ends at a `terminals` row (a fall) or a `timeouts` row (the time limit). Dynamics are learned from
`next_observations`: the row after a terminal is the next episode's start, not a successor.

Also reads Minari datasets (arrow or HDF5 storage) through the `minari` package
(`sgp_lightning.data.minari_datasets`), into the same layout, with their metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sgp_lightning.data.minari_datasets import is_minari_dataset, minari_dataset_dir, read_minari
from sgp_lightning.errors import SGPError, require

REQUIRED_KEYS = ("observations", "actions", "next_observations", "rewards", "terminals", "timeouts")
INFO_KEYS = ("infos/qpos", "infos/qvel", "infos/action_log_probs")


def d4rl_dataset_dir() -> Path:
    """Where D4RL keeps its files: $D4RL_DATASET_DIR or ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def resolve_dataset(source: str) -> Path:
    """A dataset given as an HDF5 path, a Minari dataset directory, or a name found in D4RL's or Minari's
    dataset directory (`hopper-medium-v2` → ~/.d4rl/datasets/hopper-medium-v2.hdf5; a Minari id such as
    `mujoco/hopper/medium-v0` → $MINARI_DATASETS_PATH/mujoco/hopper/medium-v0). Never downloads."""
    candidates = [
        Path(source).expanduser(),
        d4rl_dataset_dir() / f"{source}.hdf5",
        minari_dataset_dir() / source,
    ]
    for path in candidates:
        if path.is_file() or is_minari_dataset(path):
            return path
    raise SGPError(
        f"dataset {source!r} not found: looked for {', '.join(str(p) for p in candidates)}. Generate one with "
        "`python -m sgp_lightning.data.collect env=hopper dataset=medium` or pass the path of a D4RL .hdf5 file"
    )


def read_dataset(source: str | Path) -> dict[str, np.ndarray]:
    """Load and validate a D4RL-layout file or a Minari dataset; float arrays come back as float32."""
    path = resolve_dataset(str(source))
    if path.is_dir():
        return validate_dataset(read_minari(path), str(path))
    return _read_d4rl(path)


def _read_d4rl(path: Path) -> dict[str, np.ndarray]:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise SGPError(f"{path} is not a readable HDF5 file ({err})") from err
    with handle:
        missing = [key for key in REQUIRED_KEYS if key not in handle]
        require(
            not missing, f"{path} is missing D4RL keys {missing}; a D4RL file needs {list(REQUIRED_KEYS)}"
        )
        data = {key: handle[key][()] for key in REQUIRED_KEYS}
        data.update({key: handle[key][()] for key in INFO_KEYS if key in handle})
        data["metadata"] = (
            {key: _decode(value[()]) for key, value in handle["metadata"].items() if hasattr(value, "shape")}
            if "metadata" in handle
            else {}
        )
    return validate_dataset(data, str(path))


def validate_dataset(data: dict, source: str) -> dict:
    """Check shapes, lengths and finiteness of D4RL arrays; cast floats to float32 and flags to bool."""
    require(np.ndim(data["observations"]) >= 1, f"{source}: 'observations' is a scalar, not an array of rows")
    n = len(data["observations"])
    require(n > 0, f"{source} is empty: it has no transitions")
    for key in REQUIRED_KEYS + tuple(k for k in INFO_KEYS if k in data):
        value = np.asarray(data[key])
        if key in ("rewards", "terminals", "timeouts") and value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]
        require(len(value) == n, f"{source}: {key!r} has {len(value)} rows but 'observations' has {n}")
        if key in ("terminals", "timeouts"):
            require(value.ndim == 1, f"{source}: {key!r} must have shape (N,), got {value.shape}")
            # Flags are bool in D4RL; 0/1 numbers are accepted, anything else is a malformed file.
            require(
                value.dtype == bool
                or (np.issubdtype(value.dtype, np.number) and np.isin(value, (0, 1)).all()),
                f"{source}: {key!r} must hold booleans (or 0/1), got dtype {value.dtype} with other values",
            )
            value = value.astype(bool)
        else:
            require(
                np.issubdtype(value.dtype, np.number), f"{source}: {key!r} is not numeric ({value.dtype})"
            )
            bad = ~np.isfinite(value.reshape(n, -1)).all(axis=1)
            if bad.any():
                raise SGPError(
                    f"{source}: {int(bad.sum())} of {n} rows have NaN or infinite values in {key!r} "
                    f"(first at row {int(np.flatnonzero(bad)[0])})"
                )
            value = value.astype(np.float32)
            require(np.isfinite(value).all(), f"{source}: {key!r} has values too large for float32")
        data[key] = value
    require(
        data["observations"].ndim == 2 and data["actions"].ndim == 2,
        f"{source}: observations and actions need shape (N, dim)",
    )
    require(
        data["next_observations"].shape == data["observations"].shape,
        f"{source}: next_observations has shape {data['next_observations'].shape}, observations "
        f"{data['observations'].shape}",
    )
    require(
        data["rewards"].ndim == 1, f"{source}: 'rewards' must have shape (N,), got {data['rewards'].shape}"
    )
    data.setdefault("metadata", {})
    return data


def write_dataset(path: str | Path, data: dict, metadata: dict) -> Path:
    """Write arrays in D4RL's layout (gzip), with `metadata/<key>` scalars. The file is written under a
    temporary name and renamed, so a collection killed midway never leaves a half-written dataset."""
    import os

    import h5py

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(temporary, "w") as handle:
            for key in REQUIRED_KEYS:
                handle.create_dataset(key, data=data[key], compression="gzip")
            for key in INFO_KEYS:
                if key in data:
                    handle.create_dataset(key, data=data[key], compression="gzip")
            for key, value in metadata.items():
                handle.create_dataset(f"metadata/{key}", data=value)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def open_tail(ends: np.ndarray) -> np.ndarray:
    """Rows after the last episode end along the last axis (an episode that has not ended)."""
    return np.flip(np.cumsum(np.flip(ends, -1), -1), -1) == 0


def episode_ids(data: dict) -> np.ndarray:
    """Index of the episode each row belongs to (an episode ends at a terminal or timeout row)."""
    ends = data["terminals"] | data["timeouts"]
    return np.concatenate([[0], np.cumsum(ends)[:-1]])


def episode_returns(data: dict, exclude: np.ndarray | None = None) -> np.ndarray:
    """Undiscounted return of each episode (rows after the last flag count as one more episode);
    `exclude` (bool per row, e.g. the collector's cut episodes) drops the episodes holding such rows."""
    ids = episode_ids(data)
    returns = np.bincount(ids, weights=data["rewards"].astype(np.float64))
    if exclude is None:
        return returns
    return returns[np.bincount(ids, weights=exclude.astype(np.float64), minlength=len(returns)) == 0]


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
