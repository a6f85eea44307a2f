"""Datasets a reproduce entry generates before it trains, so its table does not depend on files lying around.

An entry names its data step with `data: {_target_: …, _partial_: true}` (conf/reproduce/); reproduce calls
it as `data(entry, out, fresh, num_threads)` once, before any training, and trains each of the entry's
`datasets` with the train overrides it returns.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sgp_lightning.data.collect import DEFAULTS, collect, dataset_name
from sgp_lightning.pieces import is_finished, mark_finished, settings_key
from sgp_lightning.utils import set_threads, write_json


def collect_d4rl_datasets(
    entry: DictConfig, out: Path, fresh: bool, num_threads: int | None
) -> dict[str, dict]:
    r"""
    The D4RL-layout files of `entry.datasets` for `entry.env`, regenerated into `out/data/` by the collector
    from the committed behaviour policies (`entry.collect`: transitions `n`, env copies `num_envs`, `seed`).
    A collection finished there before with the same settings is reused unless `fresh`.

    Returns:
        dataset → `{"file": path, "summary": the collector's summary (rows, return_mean, …),
        "train_overrides": [experiment=d4rl/<env>_<dataset>, domain.datamodule.dataset=path]}`.
    """
    # The behaviour-policy MLPs' float rounding depends on the thread count, and a rounding difference
    # grows into different trajectories: collect with the run's threads, not torch's default.
    set_threads(num_threads)
    datasets = {}
    for dataset in entry.datasets:
        path = Path(out) / "data" / f"{dataset_name(entry.env, dataset)}.hdf5"
        settings = OmegaConf.create({
            **DEFAULTS, "env": entry.env, "dataset": dataset, "n": int(entry.collect.n),
            "num_envs": int(entry.collect.num_envs), "seed": int(entry.collect.seed), "output": str(path),
        })  # fmt: skip
        datasets[dataset] = {
            "file": str(path),
            "summary": _collect_once(path, settings, fresh),
            "train_overrides": [
                f"experiment=d4rl/{entry.env}_{dataset}",
                f"domain.datamodule.dataset='{path}'",
            ],
        }
    return datasets


def _collect_once(path: Path, settings: DictConfig, fresh: bool) -> dict:
    """collect(settings) into `path`, or the summary of the same collection finished there before."""
    key, summary = settings_key(OmegaConf.to_container(settings)), path.with_suffix(".json")
    marker = f".{path.name}.finished"
    if not fresh and is_finished(path.parent, key, marker) and path.is_file() and summary.is_file():
        return json.loads(summary.read_text())
    collected = collect(settings)
    write_json(summary, collected)
    mark_finished(path.parent, key, marker)
    return collected
