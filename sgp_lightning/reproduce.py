"""reproduce(cfg): generate the data one results table needs, train, tune and plan every method it compares
per dataset and seed, write the table (sgp_lightning/tables.py)."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sgp_lightning.analysis.common import run_record, write_report
from sgp_lightning.errors import require
from sgp_lightning.pieces import Task, plan_piece, reuse_or_train, run_tasks, train_piece
from sgp_lightning.plan import beta_label, compose_plan_config
from sgp_lightning.planning import make_planner
from sgp_lightning.tables import best_beta, tuning_record


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    cfg = hydra.compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def reproduce(cfg: DictConfig) -> dict:
    """Regenerate one results table (`cfg.reproduce`, an entry of conf/reproduce/) into `cfg.output_dir`.

    A generic entry generates its data if it has a `data` step, then for every dataset (entries without
    `datasets`: one) and seed trains (or reuses the finished training), tunes β on separate tasks (`tune`),
    plans every method on each of its `checkpoints` (last, best) and hands the runs to its `table`
    (`sgp_lightning.tables`), which writes the summary fields of results.json and table.md. An entry with a
    `pipeline` of its own (box pushing, the analyses) is called as `pipeline(cfg, compose)` instead."""
    entry = cfg.reproduce
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if entry.get("pipeline") is not None:  # an entry with a pipeline of its own (`_target_`, `_partial_`)
        pipeline = hydra.utils.instantiate(entry.pipeline)
        require(callable(pipeline), f"reproduce.pipeline {entry.pipeline} is not a function")
        return pipeline(cfg, _compose)
    start = time.perf_counter()
    datasets = list(entry.datasets) if entry.get("datasets") is not None else [None]
    require(
        len(datasets) > 0 and len(entry.seeds) > 0, "reproduce.datasets and reproduce.seeds must be non-empty"
    )
    checkpoints = list(entry.get("checkpoints") or ["last"])
    require(
        checkpoints in (["last"], ["last", "best"]),
        f"reproduce.checkpoints must be [last] or [last, best], got {checkpoints}",
    )
    table = hydra.utils.instantiate(entry.get("table") or {"_target_": "sgp_lightning.tables.CostTable"})
    fresh = bool(entry.get("fresh", False))  # reproduce.fresh=true: ignore the finished pieces in DIR
    progress = bool(cfg.get("progress", False))  # progress bars over the runs and each plan's methods
    if entry.get("beta_sweep") is not None:  # one plan, a row per β (one batched solve; plan.py betas=)
        methods = ["methods=[sgp]", f"betas=[{','.join(str(b) for b in entry.beta_sweep)}]"]
    else:
        methods = [f"methods=[{','.join(entry.methods)}]"]
    grids = _check_tune(entry) if entry.get("tune") else {}
    data = {}
    if entry.get("data") is not None:  # datasets generated before any training (D4RL: the collector)
        data = hydra.utils.instantiate(entry.data)(entry, out, fresh, cfg.num_threads)
    settings = RunSettings(
        entry=OmegaConf.to_container(entry, resolve=True),
        out=str(out),
        threads=f"num_threads={cfg.num_threads}",
        fresh=fresh,
        progress=progress,
        grids=grids,
        methods=methods,
        checkpoints=checkpoints,
        data_overrides={name: list(d["train_overrides"]) for name, d in data.items()},
    )
    pairs = [(dataset, int(seed)) for dataset in datasets for seed in entry.seeds]
    train_seed = entry.tune.get("train_seed") if grids else None
    # tune.train_seed: β is chosen once per dataset on a training seed of its own, for every table seed;
    # otherwise each table seed tunes on its own training
    if train_seed is not None:
        tunings = [(dataset, int(train_seed), True) for dataset in datasets]
    else:
        tunings = [(dataset, seed, False) for dataset, seed in pairs] if grids else []
    tasks, tuning_keys = _tasks(settings, pairs, tunings)
    results = run_tasks(tasks, int(entry.get("workers", 1)), progress=progress)
    plan_jobs = [task.key[1:] for task in tasks if task.key[0] == "plan"]
    runs = _gather(pairs, plan_jobs, [results[("plan", *job)] for job in plan_jobs])
    tuned_once = None
    if train_seed is not None:
        tuned_once = {
            dataset: _choose(
                entry.tune, grids, [results[key] for key in tuning_keys[(dataset, int(train_seed))]]
            )
            for dataset in datasets
        }
    payload = {
        **run_record(cfg, start),  # name, title, command, argv, machine, wall time
        "seeds": list(entry.seeds),
        "train_overrides": list(entry.train_overrides),
        **table.summarize(entry, runs, data, out),
    }
    if entry.get("tune"):
        payload["tuning"] = tuning_record(entry, runs, tuned_once)
    write_report(out, payload, table.markdown(payload))
    return payload


@dataclass(frozen=True)
class RunSettings:
    """What every (dataset, seed) run of an entry shares; plain values, so a worker process can take it."""

    entry: dict  # the reproduce entry, resolved
    out: str  # the entry's output_dir
    threads: str  # the num_threads override for training and planning
    fresh: bool  # redo finished pieces
    progress: bool  # progress bars in each plan
    grids: dict  # tuned method → its β grid (empty: no tuning)
    methods: list  # the plan overrides naming what is planned: the entry's methods, or sgp at each swept β
    checkpoints: list  # [last] or [last, best]
    data_overrides: dict  # dataset → the train overrides of the data it generated
    trained: bool = False  # this pair's training task has run: reuse its training even if fresh


def _train_config(
    settings: RunSettings, dataset: str | None, seed: int, tuning: bool
) -> tuple[Path, DictConfig]:
    """Where one (dataset, seed) trains, DIR/runs/[dataset/]seed_S (the tuning seed: tune_seed_S), and the
    train.py config it trains with."""
    entry = OmegaConf.create(settings.entry)
    folder = f"tune_seed_{seed}" if tuning else f"seed_{seed}"
    run_dir = Path(settings.out) / "runs" / (f"{dataset}/{folder}" if dataset else folder)
    train_cfg = _compose(
        "train",
        [*entry.train_overrides, *settings.data_overrides.get(dataset, []), f"seed={seed}", settings.threads,
         f"paths.output_dir='{run_dir}'", "trainer.enable_progress_bar=false"],
    )  # fmt: skip
    return run_dir, train_cfg


def _trained_run(
    settings: RunSettings, dataset: str | None, seed: int, tuning: bool = False, load: bool = True
):
    """Train one (dataset, seed) into its folder (`_train_config`), or reuse the finished training there.
    Returns (run_dir, reuse_or_train's objects (with `load`; otherwise only `ckpt_path`),
    plan_once(ckpt, plan_dir, overrides))."""
    entry = OmegaConf.create(settings.entry)
    run_dir, train_cfg = _train_config(settings, dataset, seed, tuning)
    if load:
        trained_key, trained = reuse_or_train(run_dir, train_cfg, settings.fresh, reuse_only=settings.trained)
    else:  # a reused training's system, env and data are not read
        from sgp_lightning.train import last_checkpoint

        trained_key, _ = train_piece(run_dir, train_cfg, settings.fresh, reuse_only=settings.trained)
        trained = {"ckpt_path": last_checkpoint(run_dir)}

    def plan_once(ckpt: Path, plan_dir: Path, overrides: list[str]) -> dict:
        return _plan_checkpoint(
            entry, ckpt, seed, plan_dir, overrides, threads=settings.threads, fresh=settings.fresh,
            trained=f"{trained_key}:{Path(ckpt).name}", progress=settings.progress,
        )  # fmt: skip

    return run_dir, trained, plan_once


def _tasks(settings: RunSettings, pairs: list, tunings: list) -> tuple[list[Task], dict]:
    """An entry's tasks for `run_tasks`, in priority order: every training (the tuning seeds' first), then
    each tuning plan, then each table seed's plans, a task per checkpoint (3 seeds' last and best plans share
    2 workers evenly). A plan task waits only for the tasks it needs, so one worker plans the seeds already
    trained while the other trains the last seed. `tunings`: (dataset, seed, is a tune.train_seed) of each
    tuning. Returns the tasks and each tuning's task keys by (dataset, seed)."""
    entry = OmegaConf.create(settings.entry)
    trained = replace(settings, trained=True)  # a plan task runs after its training task: it only reuses it
    trainings = [(dataset, seed, True) for dataset, seed, tuning in tunings if tuning]
    trainings += [(dataset, seed, False) for dataset, seed in pairs]
    tasks = [Task(("train", *job), functools.partial(_train_job, settings, job)) for job in trainings]
    tuning_keys = {}
    for dataset, seed, tuning in tunings:
        _, train_cfg = _train_config(settings, dataset, seed, tuning)
        alone = _runs_betas_alone(entry, _recorded_hparams(train_cfg))
        keys = tuning_keys[(dataset, seed)] = []
        for name, betas in _tuning_plans(settings.grids, alone):
            keys.append(("tune", dataset, seed, name, *(betas if alone else [])))
            job = (dataset, seed, tuning, name, betas, alone)
            after = (("train", dataset, seed, tuning),)
            tasks.append(Task(keys[-1], functools.partial(_tuning_job, trained, job), after))
    once = {dataset: seed for dataset, seed, tuning in tunings if tuning}
    for dataset, seed in pairs:
        needs = tuning_keys.get((dataset, once.get(dataset, seed)), [])
        for checkpoint in settings.checkpoints:
            job = (dataset, seed, (checkpoint,))
            after = (("train", dataset, seed, False), *needs)
            tasks.append(Task(("plan", *job), functools.partial(_run, trained, job), after))
    return tasks, tuning_keys


def _recorded_hparams(train_cfg: DictConfig) -> dict:
    """What a training with `train_cfg` records in its checkpoint for plan.py (planner set, evaluator), known
    before it has trained."""
    model = train_cfg.model
    return {
        "planner_set": model.get("planner_set", "default"),
        "evaluator": OmegaConf.to_container(model.evaluator, resolve=True)
        if model.get("evaluator")
        else None,
    }


def _train_job(settings: RunSettings, job: tuple[str | None, int, bool]) -> None:
    """Train (or reuse) one (dataset, seed, is the tuning seed) of an entry."""
    dataset, seed, tuning = job
    _trained_run(settings, dataset, seed, tuning, load=False)


def _tuning_job(settings: RunSettings, job: tuple, _trained: None) -> dict[str, dict[str, float]]:
    """One tuning plan (`_tuning_plan`) on a trained seed: job = (dataset, seed, is a tune.train_seed,
    method, its β, whether each β is planned alone); `_trained` is its training task's result."""
    dataset, seed, tuning, name, betas, alone = job
    run_dir, trained, plan_once = _trained_run(settings, dataset, seed, tuning, load=False)
    return _tuning_plan(
        OmegaConf.create(settings.entry), run_dir, plan_once, trained["ckpt_path"], name, betas, alone
    )


def _run(settings: RunSettings, job: tuple, _trained: None, *achieved: dict) -> dict:
    """One (dataset, seed, (checkpoint,)) of a generic entry, once trained (`_trained`, its training task's
    result) and tuned (`achieved`: its tuning plans' results, none without tuning): plan every method on the
    checkpoint (last or best) with the tuned β. Returns plain values (it may run in a worker process):
    `plans` ({checkpoint: its plan payload}; for "best", None when the best checkpoint is the last one or
    none was kept: `_gather` gives it the last's plan), the tuning choices and, for "last", the distance
    estimator's errors (None without one)."""
    (dataset, seed, (checkpoint,)), entry = job, OmegaConf.create(settings.entry)
    # a job of the best checkpoint needs no system or data (`_best_checkpoint` reads the folder)
    load = checkpoint == "last"
    run_dir, trained, plan_once = _trained_run(settings, dataset, seed, load=load)
    errors = None
    if load and trained["system"].distance is not None:
        errors = _distance_errors(trained["system"].distance, trained["datamodule"], seed)
    last = trained["ckpt_path"]
    tuned = _choose(entry.tune, settings.grids, list(achieved)) if settings.grids else {}
    chosen = [f"planners.{name}.beta={result['beta']}" for name, result in tuned.items()]
    ckpt = last if load else _best_checkpoint(run_dir)
    if not load and (not ckpt or _same_step(Path(ckpt), Path(last))):
        plan = None  # the best checkpoint is the last one: planning it again would repeat the last's plan
    else:
        plan_root = run_dir / ("plan" if load else f"plan_{checkpoint}")
        plan = plan_once(ckpt, plan_root / "methods", [*chosen, *settings.methods])
    return {"plans": {checkpoint: plan}, "tuned": tuned, "distance_errors": errors}


def _gather(pairs: list, jobs: list, done: list) -> dict:
    """Each (dataset, seed)'s run from its jobs' results (`_run`): their plans together (a "best" left None
    is the last checkpoint's plan), the tuning, and the distance errors of the job that planned "last"."""
    runs = {}
    for (dataset, seed, checkpoints), result in zip(jobs, done, strict=True):
        run = runs.setdefault((dataset, seed), {**result, "plans": {}})
        run["plans"].update(result["plans"])
        if "last" in checkpoints:
            run["distance_errors"] = result["distance_errors"]
    for run in runs.values():
        if "best" in run["plans"] and run["plans"]["best"] is None:
            run["plans"]["best"] = run["plans"]["last"]
    return {pair: runs[pair] for pair in pairs}


def _best_checkpoint(run_dir: Path) -> str:
    """ModelCheckpoint's best (lowest val/loss) checkpoint of a finished run: the one epoch checkpoint it
    kept ("" if none)."""
    kept = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    return str(kept[-1]) if kept else ""


def _same_step(best: Path, last: Path) -> bool:
    """Whether ModelCheckpoint's best checkpoint is the last one (then evaluating it again would repeat it)."""
    from sgp_lightning.models import read_checkpoint

    return read_checkpoint(str(best))["global_step"] == read_checkpoint(str(last))["global_step"]


def _plan_checkpoint(
    entry: DictConfig, ckpt: Path, seed: int, plan_dir: Path, overrides: list[str], threads: str, trained: str,
    fresh: bool, progress: bool = False,
) -> dict:  # fmt: skip
    """plan.py on one seed's checkpoint with the entry's plan overrides, then `overrides` (reused when the
    same plan of the same training, key `trained`, finished in plan_dir)."""
    plan_cfg = compose_plan_config(
        [
            *_plan_overrides(entry, ckpt, overrides),
            f"seed={seed}",
            f"output_dir='{plan_dir}'",
            threads,
            f"progress={str(progress).lower()}",
        ]
    )
    return plan_piece(plan_dir, plan_cfg, trained, fresh)


def _plan_overrides(entry: DictConfig, ckpt: str | Path, overrides: list[str]) -> list[str]:
    """What plan.py plans `ckpt` with in this entry: the entry's plan overrides, then `overrides`, then the
    entry's `mpc` (the rest, seed, output folder and threads, changes no plan's settings)."""
    return [
        "video=false",  # no MuJoCo videos in every plan (slow with software rendering) unless plan_overrides ask
        *entry.plan_overrides,
        *overrides,
        f"ckpt_path='{ckpt}'",
        f"mpc={str(bool(entry.mpc)).lower()}",
    ]


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
    require(
        tune.get("mode") in (None, "min", "max"),
        f"reproduce.tune.mode must be min or max, got {tune.get('mode')}",
    )
    require(
        tune.get("train_seed") is None or int(tune.train_seed) not in [int(s) for s in entry.seeds],
        f"reproduce.tune.train_seed={tune.get('train_seed')} is one of the table's seeds {list(entry.seeds)}: "
        "tuning must train on a seed the table does not report",
    )
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


def _runs_betas_alone(entry: DictConfig, hparams: dict) -> bool:
    """Whether the entry's plans (`_plan_overrides`) of a checkpoint recording `hparams` run each β of a grid
    alone (the evaluator does not stack them into one batch, e.g. MPC episodes): then a grid's β are planned
    apart, which gives the same numbers and lets them spread over workers."""
    from sgp_lightning.plan import plan_evaluator

    cfg = compose_plan_config(_plan_overrides(entry, "unused", []), hparams)
    return not plan_evaluator(cfg, hparams.get("evaluator")).stack


def _tuning_plans(grids: dict[str, list[float]], alone: bool) -> list[tuple[str, list[float]]]:
    """The tuning's plans: each method's whole grid in one plan (a gradient method's β values are one
    batched solve, plan.py betas=), or, where the evaluator runs each β `alone` anyway, one plan per β."""
    if alone:
        return [(name, [beta]) for name, betas in grids.items() for beta in betas]
    return list(grids.items())


def _tuning_plan(
    entry: DictConfig, run_dir: Path, plan_once, ckpt: str, name: str, betas: list[float], alone: bool
) -> dict[str, dict[str, float]]:
    """Plan `name` at each of `betas` on the tuning tasks (`tune.task_seed`) into DIR/…/tune/name (one β
    `alone`: …/tune/name/beta_B); returns {name: {β label: tune.metric}}."""
    tune = entry.tune
    overrides = [
        f"methods=[{name}]",
        f"betas=[{','.join(str(b) for b in betas)}]",
        f"task_seed={tune.task_seed}",
        "track_true_cost_every=null",
    ]
    plan_dir = run_dir / "tune" / name / (f"beta_{betas[0]:g}" if alone else "")
    result = plan_once(ckpt, plan_dir, overrides)
    metric = tune.get("metric") or "cost_achieved"
    return {name: {f"{b:g}": result["methods"][beta_label(name, b)][metric] for b in betas}}


def _choose(tune: DictConfig, grids: dict[str, list[float]], achieved: list[dict]) -> dict[str, dict]:
    """Each method in `tune.methods` gets the β of `tune.betas` with the best `tune.metric` (default: the
    lowest achieved cost; `tune.mode: max` for scores), from the tuning plans' `achieved` values. Those
    plans ran on a separate task set or episode seed range (`tune.task_seed`): the table's own tasks and
    episodes never choose a setting."""
    merged = {name: {} for name in grids}
    for plan in achieved:
        for name, values in plan.items():
            merged[name].update(values)
    return {
        name: {
            "beta": best_beta(betas, merged[name], tune.get("mode")),
            "achieved_by_beta": {f"{b:g}": merged[name][f"{b:g}"] for b in betas},
        }
        for name, betas in grids.items()
    }


def _distance_errors(estimator, datamodule, seed: int, num_points: int = 2000) -> list[dict]:
    """The distance estimator's error against the exact softmin, per level, on queries around held-out
    (validation) pairs, none of which it was trained on."""
    estimator = estimator.cpu().eval()
    val = datamodule.val_data
    anchors = estimator.normalize_pair(val["x"][:num_points], val["u"][:num_points])
    return estimator.error_by_level(anchors, seed=seed)
