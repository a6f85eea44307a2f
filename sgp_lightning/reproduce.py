"""reproduce(cfg): train what one results table needs, plan every method it compares, write the table."""

from __future__ import annotations

import functools
import math
import shutil
import statistics
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sgp_lightning.analysis.common import run_record
from sgp_lightning.errors import require
from sgp_lightning.pieces import map_runs, plan_piece, reuse_or_train
from sgp_lightning.plan import compose_plan_config
from sgp_lightning.planning import make_planner
from sgp_lightning.report import methods_table
from sgp_lightning.utils import write_json, write_text


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    cfg = hydra.compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def _aggregate(per_seed: list[dict]) -> dict:
    """Mean (± std for achieved cost) over seeds of each seed's task-mean metrics."""
    out = {}
    for key in ("cost_planned", "cost_achieved", "model_error", "seconds"):
        values = [run[key] for run in per_seed]
        out[key] = statistics.fmean(values)
        if key == "cost_achieved":
            out["cost_achieved_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["gap"] = statistics.fmean(abs(r["cost_achieved"] - r["cost_planned"]) for r in per_seed)
    for key in ("success_rate", "outside_data", "time_in_trap"):
        if key in per_seed[0]:
            out[key] = statistics.fmean(run[key] for run in per_seed)
    if "convergence" in per_seed[0]:  # same iterations in every seed: average the curves
        curves = [run["convergence"]["true_cost"] for run in per_seed]
        out["convergence"] = {
            "iteration": per_seed[0]["convergence"]["iteration"],
            "true_cost": [statistics.fmean(values) for values in zip(*curves, strict=True)],
        }
    out["per_seed"] = [  # with each seed's planner settings (tuned values differ between seeds)
        {
            k: run[k]
            for k in ("cost_planned", "cost_achieved", "model_error", "seconds", "planner")
            if k in run
        }
        for run in per_seed
    ]
    out["per_task"] = [task for run in per_seed for task in run["per_task"]]
    return out


def reproduce(cfg: DictConfig) -> dict:
    entry = cfg.reproduce
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if entry.get("pipeline") is not None:  # an entry with a pipeline of its own (`_target_`, `_partial_`)
        pipeline = hydra.utils.instantiate(entry.pipeline)
        require(callable(pipeline), f"reproduce.pipeline {entry.pipeline} is not a function")
        return pipeline(cfg, _compose)
    start = time.perf_counter()
    threads = f"num_threads={cfg.num_threads}"
    fresh = bool(entry.get("fresh", False))  # reproduce.fresh=true: ignore the finished pieces in DIR
    progress = bool(cfg.get("progress", False))  # progress bars over the seeds and each plan's methods
    if entry.get("beta_sweep") is not None:
        methods = {f"beta={b:g}": [f"planners.sgp.beta={b}", "methods=[sgp]"] for b in entry.beta_sweep}
    else:
        methods = {"": [f"methods=[{','.join(entry.methods)}]"]}

    grids = _check_tune(entry) if entry.get("tune") else {}
    workers = int(entry.get("workers", 1))
    seed_run = functools.partial(
        _seed_run,
        OmegaConf.to_container(entry, resolve=True),
        str(out),
        threads,
        fresh,
        grids,
        methods,
        progress,
    )
    seed_runs = map_runs(seed_run, list(entry.seeds), workers, progress=progress)
    per_method: dict[str, list[dict]] = {}
    distance_errors: list[list[dict]] = []  # per seed, per level (systems with a distance estimator)
    tuning: dict[int, dict] = {}  # per seed: each tuned method's sweep and chosen β
    domain = None
    for seed, run in zip(entry.seeds, seed_runs, strict=True):
        tuning[seed] = run["tuned"]
        if run["distance_errors"] is not None:
            distance_errors.append(run["distance_errors"])
        for label, result in run["results"].items():
            domain = result["domain"]
            for name, metrics in result["methods"].items():
                per_method.setdefault(label or name, []).append(metrics)
    first_plans = out / "runs" / f"seed_{entry.seeds[0]}" / "plan" / "methods"
    for figure in ("plan.png", "image_rollouts.png"):
        if (first_plans / figure).exists():
            shutil.copy(first_plans / figure, out / figure)

    methods_summary = {name: _aggregate(runs) for name, runs in per_method.items()}
    threshold = entry.get("convergence_threshold")
    if threshold is not None:  # how fast each method's true cost gets there (paper Fig. 2F)
        for metrics in methods_summary.values():
            if "convergence" in metrics:
                curve = metrics["convergence"]
                reached = [
                    i for i, c in zip(curve["iteration"], curve["true_cost"], strict=True) if c <= threshold
                ]
                metrics["iterations_to_threshold"] = reached[0] if reached else "never"
    payload = {
        **run_record(cfg, start),  # name, title, command, argv, machine, wall time
        "domain": domain,
        "seeds": list(entry.seeds),
        "train_overrides": list(entry.train_overrides),
        "mpc": bool(entry.mpc),
        "methods": methods_summary,
        "paper": OmegaConf.to_container(entry.paper) if entry.get("paper") else None,
        "convergence_threshold": threshold,
    }
    if entry.get("tune"):
        payload["tuning"] = {
            "task_seed": entry.tune.task_seed,
            "per_seed": {str(k): v for k, v in tuning.items()},
        }
    if distance_errors:  # mean over seeds, per level
        payload["distance_estimator"] = [
            {key: statistics.fmean(seed_rows[k][key] for seed_rows in distance_errors) for key in rows}
            for k, rows in enumerate(distance_errors[0])
        ]
    if any("convergence" in m for m in methods_summary.values()):
        from sgp_lightning.plotting import plot_convergence, save_figure

        save_figure(plot_convergence(methods_summary), out / "convergence.png")  # mean over seeds
    if entry.get("beta_sweep") is not None:
        from sgp_lightning.plotting import plot_sweep, save_figure

        rows = [{"beta": float(b), **methods_summary[f"beta={b:g}"]} for b in entry.beta_sweep]
        save_figure(plot_sweep(rows), out / "sweep.png")
    write_json(out / "results.json", payload)
    table = _markdown(payload)
    write_text(out / "table.md", table)
    print(table)
    return payload


def _seed_run(
    entry: dict, out: str, threads: str, fresh: bool, grids: dict, methods: dict, progress: bool, seed: int
) -> dict:  # fmt: skip
    """One seed of a generic entry: train (or reuse the finished training), tune, plan every method.
    Returns plain values (it may run in a worker process): each plan's results by label, the tuning
    choices and the distance estimator's errors (None without one)."""
    entry = OmegaConf.create(entry)
    run_dir = Path(out) / "runs" / f"seed_{seed}"
    train_cfg = _compose(
        "train",
        [*entry.train_overrides, f"seed={seed}", threads, f"paths.output_dir='{run_dir}'",
         "trainer.enable_progress_bar=false"],
    )  # fmt: skip
    trained_key, trained = reuse_or_train(run_dir, train_cfg, fresh)
    errors = None
    if trained["system"].distance is not None:
        errors = _distance_errors(trained["system"].distance, trained["datamodule"], seed)
    plan_once = functools.partial(_plan_checkpoint, entry, trained["ckpt_path"], seed, threads=threads,
                                  trained=trained_key, fresh=fresh, progress=progress)  # fmt: skip
    tuned = _tune(entry, grids, run_dir, plan_once) if grids else {}
    chosen = [f"planners.{name}.beta={result['beta']}" for name, result in tuned.items()]
    results = {
        label: plan_once(run_dir / "plan" / (label.replace("=", "_") or "methods"), [*chosen, *overrides])
        for label, overrides in methods.items()
    }
    return {"results": results, "tuned": tuned, "distance_errors": errors}


def _plan_checkpoint(
    entry: DictConfig, ckpt: Path, seed: int, plan_dir: Path, overrides: list[str], threads: str, trained: str,
    fresh: bool, progress: bool = False,
) -> dict:  # fmt: skip
    """plan.py on one seed's checkpoint with the entry's plan overrides, then `overrides` (reused when the
    same plan of the same training, key `trained`, finished in plan_dir)."""
    plan_cfg = compose_plan_config(
        [
            *entry.plan_overrides,
            *overrides,
            f"ckpt_path='{ckpt}'",
            f"seed={seed}",
            f"output_dir='{plan_dir}'",
            f"mpc={str(bool(entry.mpc)).lower()}",
            threads,
            f"progress={str(progress).lower()}",
        ]
    )
    return plan_piece(plan_dir, plan_cfg, trained, fresh)


def _tune_grid(entry: DictConfig, planner_names) -> dict[str, list[float]]:
    """Each tuned method's β grid: `tune.betas` is one list for every method, or a list per method (grids of
    methods not in `tune.methods` are unused, so a narrowed `tune.methods` still works)."""
    tune = entry.tune
    if isinstance(tune.betas, DictConfig):
        unknown = sorted(set(tune.betas) - set(planner_names))
        missing = [m for m in tune.methods if m not in tune.betas]
        require(not unknown, f"reproduce.tune.betas has grids for {unknown}, which are not planners")
        require(not missing, f"reproduce.tune.betas has no grid for {missing}")
        grids = {name: tune.betas[name] for name in tune.methods}
    else:
        require(
            isinstance(tune.betas, ListConfig),
            f"reproduce.tune.betas must be a list of β or a mapping method → list, got {tune.betas!r}",
        )
        grids = {name: tune.betas for name in tune.methods}
    for name, betas in grids.items():
        require(
            isinstance(betas, ListConfig), f"reproduce.tune.betas for {name} must be a list, got {betas!r}"
        )
        require(len(betas) > 0, f"reproduce.tune.betas is empty for {name}")
        require(
            all(isinstance(b, int | float) and math.isfinite(b) and b >= 0 for b in betas),
            f"reproduce.tune.betas must be finite numbers ≥ 0, got {list(betas)} for {name}",
        )
        labels = [f"{b:g}" for b in betas]  # keys of achieved_by_beta and plan folder names
        require(len(set(labels)) == len(labels), f"reproduce.tune.betas for {name} repeats a value: {labels}")
    return {name: [float(b) for b in betas] for name, betas in grids.items()}


def _check_tune(entry: DictConfig) -> dict[str, list[float]]:
    """Stop before any training on a tuning section that cannot work; returns each tuned method's grid."""
    tune = entry.tune
    require(entry.get("beta_sweep") is None, "reproduce.tune and reproduce.beta_sweep cannot be combined")
    unknown = [m for m in tune.methods if m not in entry.methods]
    require(
        not unknown, f"reproduce.tune.methods {unknown} are not in reproduce.methods {list(entry.methods)}"
    )
    planners = _compose("plan", [*entry.plan_overrides, "ckpt_path=unused"]).planners
    for name in tune.methods:
        require(
            make_planner(planners[name]).has_penalty,
            f"reproduce.tune.methods: {name} has no penalty weight to tune (no penalty, or a policy)",
        )
    return _tune_grid(entry, list(planners))


def _tune(entry: DictConfig, grids: dict[str, list[float]], run_dir: Path, plan_once) -> dict[str, dict]:
    """Each method in `tune.methods` gets the β of `tune.betas` with the lowest achieved cost on a separate
    task set (`tune.task_seed`), planned with the trained checkpoint of this seed: the table's own tasks
    never choose a setting."""
    tune = entry.tune
    chosen = {}
    for name, betas in grids.items():
        achieved = {}
        for beta in betas:
            overrides = [
                f"methods=[{name}]",
                f"planners.{name}.beta={beta}",
                f"task_seed={tune.task_seed}",
                "track_true_cost_every=null",
            ]
            plan_dir = run_dir / "tune" / f"{name}_beta_{beta:g}"
            result = plan_once(plan_dir, overrides)
            achieved[f"{beta:g}"] = result["methods"][name]["cost_achieved"]
        # the first of equals (the smallest listed) wins; a diverged plan (NaN) never does
        best = min(betas, key=lambda b: math.inf if math.isnan(achieved[f"{b:g}"]) else achieved[f"{b:g}"])
        chosen[name] = {"beta": float(best), "achieved_by_beta": achieved}
    return chosen


def _distance_errors(estimator, datamodule, seed: int, num_points: int = 2000) -> list[dict]:
    """The distance estimator's error against the exact softmin, per level, on queries around held-out
    (validation) pairs, none of which it was trained on."""
    estimator = estimator.cpu().eval()
    val = datamodule.val_data
    anchors = estimator.normalize_pair(val["x"][:num_points], val["u"][:num_points])
    return estimator.error_by_level(anchors, seed=seed)


def _distance_markdown(rows: list[dict]) -> str:
    lines = [
        "| level | σ | near data: mean \\|d̂² − d²\\| | near, ÷σ² | uniform in Ω: mean \\|d̂² − d²\\| | uniform, ÷σ² |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        values = [r["sigma"], r.get("abs_error_near"), r.get("scaled_error_near")]
        values += [r.get("abs_error_uniform"), r.get("scaled_error_uniform")]
        lines.append(
            f"| {int(r['level'])} | "
            + " | ".join(f"{v:.3g}" if v is not None else "–" for v in values)
            + " |"
        )
    return "\n".join(lines)


def _markdown(payload: dict) -> str:
    m = payload["machine"]
    seeds = payload["seeds"]
    notes = ""
    if payload.get("convergence_threshold") is not None:
        notes += (
            f"Iterations to threshold: the first recorded optimiser iteration at which the mean true cost of the "
            f"current plan is ≤ {payload['convergence_threshold']:g} (recorded every few iterations).\n"
        )
    for key, text in (
        (
            "success_rate",
            "Success rate: share of tasks whose true rollout meets the domain's success criterion.\n",
        ),
        (
            "outside_data",
            "Plan outside data: share of planned steps outside the region the data was drawn from.\n",
        ),
        (
            "time_in_trap",
            "True steps in pit: share of the true trajectory's states inside the pit (actuation lost).\n",
        ),
    ):
        if any(key in m for m in payload["methods"].values()):
            notes += text
    distance = ""
    if payload.get("distance_estimator"):
        distance = (
            "\nData-distance estimator against the exact streamed softmin (queries around held-out pairs, "
            f"normalized (x, u) space, mean over seeds):\n\n{_distance_markdown(payload['distance_estimator'])}\n"
        )
    return (
        f"### {payload['title']}\n\n"
        f"{methods_table(payload['methods'])}\n\n"
        f"Mean over {len(seeds)} seeds {seeds} (each the mean over the domain's tasks); achieved cost ± std over "
        f"seeds; gap is the mean over seeds of |achieved − planned|.\n{notes}"
        f"Command: `{payload['command']}` (train overrides: {payload['train_overrides']}); "
        f"machine: {m['processor']}, {m['cpu_count']} cores, torch {m['torch']} with {m['torch_threads']} thread(s), "
        f"{m['cuda'] or 'no GPU'}; wall time {payload['wall_seconds'] / 60:.1f} min.\n"
        + ("" if not payload.get("paper") else f"\nPaper: {payload['paper']}\n")
        + distance
        + _tuning_markdown(payload.get("tuning"))
    )


def _tuning_markdown(tuning: dict | None) -> str:
    """One row per seed and tuned method: achieved cost on the tuning tasks at each β, and the choice."""
    if not tuning:
        return ""
    rows = [
        f"| {seed} | {name} | "
        + ", ".join(f"{beta}: {cost:.3g}" for beta, cost in result["achieved_by_beta"].items())
        + f" | {result['beta']:g} |"
        for seed, methods in tuning["per_seed"].items()
        for name, result in methods.items()
    ]
    return (
        f"\nβ chosen per seed on a separate task set (task_seed={tuning['task_seed']}), by achieved cost:\n\n"
        "| seed | method | achieved cost at each β | chosen β |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
