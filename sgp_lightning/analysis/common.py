"""What the analysis entries of reproduce.py share: one training run, the plan.py planner settings, and
the line that states command, machine and wall time under each table."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from omegaconf import OmegaConf


def train_run(cfg, compose, seed: int | None = None) -> dict:
    """Train `reproduce.train_overrides` with `seed` (default `reproduce.seed`) into DIR/runs/seed_<seed> (or
    reuse that training if it finished with the same settings: sgp_lightning.pieces); returns train()'s
    objects with the system moved to the CPU, `ckpt_path`, its last checkpoint, and `key`, the key of its
    settings (for the pieces that depend on it)."""
    from sgp_lightning.pieces import reuse_or_train

    entry = cfg.reproduce
    seed = entry.seed if seed is None else seed
    run_dir = Path(cfg.output_dir) / "runs" / f"seed_{seed}"
    overrides = [*entry.train_overrides, f"seed={seed}", f"paths.output_dir='{run_dir}'",
                 "trainer.enable_progress_bar=false", f"num_threads={cfg.num_threads}"]  # fmt: skip
    key, trained = reuse_or_train(run_dir, compose("train", overrides), bool(entry.get("fresh", False)))
    trained["system"] = trained["system"].cpu()
    return {**trained, "key": key}


def planner_settings(compose, overrides) -> dict:
    """plan.py's `planners` (conf/plan.yaml) with `overrides`, as plain dicts."""
    return OmegaConf.to_container(compose("plan", ["ckpt_path=unused", *overrides]).planners, resolve=True)


def tune_open_loop(system, env, planners: dict, tune, seed: int, data=None) -> dict:
    r"""
    The tuning protocol (docs/results.md) for an analysis entry that plans open loop in its own process:
    each method in `tune.methods` gets the β of its grid with the lowest mean achieved cost on the tasks of
    `tune.task_seed`, a set the table does not report; all of a method's β are one stacked solve. With
    `tune.max_distance_to_data` (and `data`), only β whose planned states all stay within that distance of
    the data compete (none does: the β whose plans stay closest).

    Args:
        system (`SGPSystem`), env (`Env`): the trained system and its domain (the table's env is not changed).
        planners (`dict`): method → planner settings (`planner_settings`); the chosen β are written into it.
        tune (`DictConfig`): `task_seed`, `methods`, `betas` (one list, or a list per method), optionally
            `max_distance_to_data`.
        seed (`int`): the table's seed (the record is keyed by it).
        data (`torch.Tensor`, *optional*): (N, *state_shape) data states, for `max_distance_to_data`.

    Returns:
        `dict`: results.json's `tuning`, as `sgp_lightning.tables.tuning_record` writes it for one seed (and
        per method `distance_to_data_by_beta`, the largest distance of a planned state to the data).
    """
    import copy

    import torch

    from sgp_lightning.distance import nearest_distance
    from sgp_lightning.planning import make_planner
    from sgp_lightning.planning.evaluate import plan_and_evaluate_stacked
    from sgp_lightning.tables import best_beta

    tuning_env = copy.copy(env)
    tuning_env.task_seed = int(tune.task_seed)
    limit = tune.get("max_distance_to_data")
    chosen = {}
    for name in tune.methods:
        betas = [float(b) for b in (tune.betas[name] if OmegaConf.is_dict(tune.betas) else tune.betas)]
        grid = [make_planner({**planners[name], "beta": b}) for b in betas]
        torch.manual_seed(seed)
        evaluations = plan_and_evaluate_stacked(
            system, tuning_env, tuning_env.tasks(), grid, [name] * len(grid)
        )
        achieved = {f"{b:g}": float(e.cost_achieved.mean()) for b, e in zip(betas, evaluations, strict=True)}
        if limit is None:
            chosen[name] = {"beta": best_beta(betas, achieved), "achieved_by_beta": achieved}
        else:
            gaps = {f"{b:g}": float(nearest_distance(e.plan.states.detach(), data).max())
                    for b, e in zip(betas, evaluations, strict=True)}  # fmt: skip
            near = [b for b in betas if gaps[f"{b:g}"] <= limit]
            # none stays near the data: the β whose plans stay closest
            beta = best_beta(near, achieved) if near else best_beta(betas, gaps)
            chosen[name] = {"beta": beta, "achieved_by_beta": achieved, "distance_to_data_by_beta": gaps}
        planners[name] = {**planners[name], "beta": chosen[name]["beta"]}
    metric = "cost_achieved" if limit is None else "cost_achieved_near_data"
    return {"task_seed": int(tune.task_seed), "metric": metric, "max_distance_to_data": limit,
            "per_seed": {str(seed): chosen}}  # fmt: skip


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


# results.json fields that differ between runs of the same settings: times, the machine, the command, paths
NOT_NUMBERS = frozenset(
    {"wall_seconds", "seconds", "seconds_per_step", "machine", "argv", "command", "file", "checkpoint"}
)


def results_numbers(value):
    """A results.json payload without the fields that differ between runs of the same settings
    (`NOT_NUMBERS`), to check that two runs (other workers, another commit) gave the same numbers."""
    if isinstance(value, dict):
        return {key: results_numbers(item) for key, item in value.items() if key not in NOT_NUMBERS}
    if isinstance(value, list):
        return [results_numbers(item) for item in value]
    return value


def write_report(out: str | Path, payload: dict, table: str) -> None:
    """DIR/results.json and DIR/table.md of a reproduce entry; the table is also printed."""
    from sgp_lightning.utils import write_json, write_text

    write_json(Path(out) / "results.json", payload)
    write_text(Path(out) / "table.md", table)
    print(table)


class Report:
    r"""
    What one reproduce entry writes to `cfg.output_dir`: results.json, table.md (printed too) and figures.
    The wall time in its run record counts from this object's creation, so make it first.

    Args:
        cfg (`DictConfig`):
            The reproduce config: `cfg.reproduce` is the entry (its `title` heads the table),
            `cfg.output_dir` the folder.
    """

    def __init__(self, cfg):
        self.cfg, self.entry, self.out = cfg, cfg.reproduce, Path(cfg.output_dir)
        self.start = time.perf_counter()

    def record(self) -> dict:
        """[`run_record`]: name, title, command, argv, machine and the wall time so far."""
        return run_record(self.cfg, self.start)

    def save_figure(self, fig, name: str) -> None:
        """Save a matplotlib figure as DIR/`name` (and close it)."""
        from sgp_lightning.plotting import save_figure

        save_figure(fig, self.out / name)

    def settings_study(self, run: Callable[..., dict], plot: Callable[[dict], object], figure: str) -> dict:
        r"""
        An entry that fits its own models from `reproduce.settings` (no training run).

        Args:
            run (`Callable`):
                `run(settings) -> payload`, the study.
            plot (`Callable`):
                `plot(payload) -> figure`, saved as DIR/`figure`.
            figure (`str`):
                The figure's file name.

        Returns:
            `dict`: the payload, with `settings` (plain) and the run record added.
        """
        payload = run(self.entry.settings)
        payload.update({"settings": OmegaConf.to_container(self.entry.settings), **self.record()})
        self.save_figure(plot(payload), figure)
        return payload

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[str]], note: str) -> str:
        r"""
        The markdown of table.md: `### <title>`, a table, and `note` under it.

        Args:
            columns (`Sequence[str]`):
                Column headers.
            rows (`Iterable[Sequence[str]]`):
                Formatted cells, one sequence per row, as many as `columns`.
            note (`str`):
                The paragraph under the table (settings and [`provenance`]).

        Returns:
            `str`: the markdown.
        """
        lines = [f"### {self.entry.title}\n", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append(f"\n{note}\n")
        return "\n".join(lines)

    def write(self, payload: dict, table: str) -> dict:
        """[`write_report`] into DIR; returns `payload`."""
        write_report(self.out, payload, table)
        return payload
