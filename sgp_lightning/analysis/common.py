"""What the analysis entries of reproduce.py share: one training run, the plan.py planner settings, and
the line that states command, machine and wall time under each table."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf


def train_run(cfg, compose) -> dict:
    """Train `reproduce.train_overrides` with `reproduce.seed` into DIR/runs/seed_<seed>; returns train()'s
    objects with the system moved to the CPU, and `ckpt_path`, its last checkpoint."""
    from sgp_lightning.train import train

    entry = cfg.reproduce
    run_dir = Path(cfg.output_dir) / "runs" / f"seed_{entry.seed}"
    overrides = [*entry.train_overrides, f"seed={entry.seed}", f"paths.output_dir='{run_dir}'",
                 "trainer.enable_progress_bar=false", f"num_threads={cfg.num_threads}"]  # fmt: skip
    _, trained = train(compose("train", overrides))
    trained["system"] = trained["system"].cpu()
    # The checkpoint this run wrote (Lightning names it last-v1.ckpt if an old last.ckpt is in the way).
    checkpoint = trained["trainer"].checkpoint_callback
    trained["ckpt_path"] = (
        Path(checkpoint.last_model_path) if checkpoint and checkpoint.last_model_path else None
    )
    return trained


def planner_settings(compose, overrides) -> dict:
    """plan.py's `planners` (conf/plan.yaml) with `overrides`, as plain dicts."""
    return OmegaConf.to_container(compose("plan", ["ckpt_path=unused", *overrides]).planners, resolve=True)


def provenance(payload: dict) -> str:
    """`Command: …; machine: …; wall time …` from a results payload."""
    m, seconds = payload["machine"], payload["wall_seconds"]
    wall = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return (
        f"Command: `{payload['command']}`; machine: {m['processor']}, {m['cpu_count']} cores, torch {m['torch']} "
        f"with {m['torch_threads']} thread(s); wall time {wall}."
    )


def reproduce_command(cfg) -> str:
    """The command that regenerates this run: the entry's name and every override it was given on the
    command line (a narrowed `reproduce.datasets=[...]` changes what the table holds)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = []
    if HydraConfig.initialized():  # run by reproduce.py; called directly (tests), only output_dir is known
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("reproduce=")]
    if not any(o.startswith("output_dir=") for o in overrides):  # the default, stated
        overrides.insert(0, f"output_dir={cfg.output_dir}")
    return " ".join(["python reproduce.py", cfg.reproduce.name, *map(shlex.quote, overrides)])


def run_record(cfg, start: float) -> dict:
    """Name, title, command, argv, machine and wall time (since `start`, a perf_counter reading) of the
    reproduce entry `cfg.reproduce`, for its results.json."""
    from sgp_lightning.utils import machine_info

    entry = cfg.reproduce
    return {
        "name": entry.name,
        "title": entry.title,
        "command": reproduce_command(cfg),
        "argv": sys.argv,
        "machine": machine_info(),
        "wall_seconds": time.perf_counter() - start,
    }


def write_report(out: str | Path, payload: dict, table: str) -> None:
    """DIR/results.json and DIR/table.md of a reproduce entry; the table is also printed."""
    from sgp_lightning.utils import write_json, write_text

    write_json(Path(out) / "results.json", payload)
    write_text(Path(out) / "table.md", table)
    print(table)
