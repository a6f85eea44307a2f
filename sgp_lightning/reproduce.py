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
from sgp_lightning.pieces import map_runs, plan_piece, reuse_or_train, train_piece
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
    workers = int(entry.get("workers", 1))
    pairs = [(dataset, int(seed)) for dataset in datasets for seed in entry.seeds]
    if grids and entry.tune.get("train_seed") is not None:
        # tune.train_seed: β is chosen once per dataset on a training seed of its own, for every table seed.
        tuning_pairs = [(dataset, int(entry.tune.train_seed)) for dataset in datasets]
        if workers == 1:
            tuned = map_runs(functools.partial(_tune_run, settings), tuning_pairs, progress=progress)
        else:
            tuned = _tune_on_workers(settings, tuning_pairs, pairs, workers, progress)
        # with several workers every table pair was trained above: the planning below reuses it
        settings = replace(settings, tuned=dict(zip(datasets, tuned, strict=True)), trained=workers > 1)
    # Every (dataset, seed) trains and plans on its own: in this process, or reproduce.workers at once. Once
    # every pair is trained, each checkpoint's plans are a job of their own (3 seeds' last and best plans
    # share 2 workers evenly, where 3 seeds would leave one idle for a round).
    split = settings.trained and len(checkpoints) > 1
    per_job = [(checkpoint,) for checkpoint in checkpoints] if split else [tuple(checkpoints)]
    jobs = [(dataset, seed, planned) for dataset, seed in pairs for planned in per_job]
    done = map_runs(functools.partial(_run, settings), jobs, workers, progress=progress)
    runs = _gather(pairs, jobs, done)
    payload = {
        **run_record(cfg, start),  # name, title, command, argv, machine, wall time
        "seeds": list(entry.seeds),
        "train_overrides": list(entry.train_overrides),
        **table.summarize(entry, runs, data, out),
    }
    if entry.get("tune"):
        payload["tuning"] = tuning_record(entry, runs, settings.tuned)
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
    tuned: dict | None = None  # dataset → the choices tuned once on tune.train_seed (None: tune per run)
    trained: bool = False  # every pair was trained by this reproduction already: reuse it even if fresh


def _trained_run(
    settings: RunSettings, dataset: str | None, seed: int, tuning: bool = False, load: bool = True
):
    """Train one (dataset, seed) into DIR/runs/[dataset/]seed_S (the tuning seed: tune_seed_S), or reuse the
    finished training there. Returns (run_dir, reuse_or_train's objects (with `load`; otherwise only
    `ckpt_path`), plan_once(ckpt, plan_dir, overrides))."""
    entry = OmegaConf.create(settings.entry)
    folder = f"tune_seed_{seed}" if tuning else f"seed_{seed}"
    run_dir = Path(settings.out) / "runs" / (f"{dataset}/{folder}" if dataset else folder)
    train_cfg = _compose(
        "train",
        [*entry.train_overrides, *settings.data_overrides.get(dataset, []), f"seed={seed}", settings.threads,
         f"paths.output_dir='{run_dir}'", "trainer.enable_progress_bar=false"],
    )  # fmt: skip
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


def _tune_run(settings: RunSettings, pair: tuple[str | None, int]) -> dict:
    """Train on `tune.train_seed` (a seed the table does not report) and tune β there (`_tune`)."""
    (dataset, seed), entry = pair, OmegaConf.create(settings.entry)
    run_dir, trained, plan_once = _trained_run(settings, dataset, seed, tuning=True, load=False)
    return _tune(entry, settings.grids, run_dir, plan_once, trained["ckpt_path"])


def _tune_on_workers(
    settings: RunSettings, tuning_pairs: list, pairs: list, workers: int, progress: bool
) -> list:
    """tune.train_seed with several workers: every training first (the tuning seeds', then the table's, so
    no worker waits for β with nothing to do), then the tuning's plans spread over the workers. Returns the
    choices per tuning pair, as `_tune_run` would (the same plans, in the same folders)."""
    trainings = [(dataset, seed, True) for dataset, seed in tuning_pairs] + [(d, s, False) for d, s in pairs]
    map_runs(functools.partial(_train_job, settings), trainings, workers, progress=progress)
    entry, trained = OmegaConf.create(settings.entry), replace(settings, trained=True)
    jobs = []
    for dataset, seed in tuning_pairs:
        _, tuning_run, _ = _trained_run(trained, dataset, seed, tuning=True, load=False)
        alone = _runs_betas_alone(entry, tuning_run["ckpt_path"])
        jobs += [(dataset, seed, name, betas, alone) for name, betas in _tuning_plans(settings.grids, alone)]
    achieved = map_runs(functools.partial(_tuning_job, trained), jobs, workers, progress=progress)
    return [
        _choose(
            entry.tune, settings.grids, [a for job, a in zip(jobs, achieved, strict=True) if job[:2] == pair]
        )
        for pair in tuning_pairs
    ]


def _train_job(settings: RunSettings, job: tuple[str | None, int, bool]) -> None:
    """Train (or reuse) one (dataset, seed, is the tuning seed) of an entry tuned on `tune.train_seed`."""
    dataset, seed, tuning = job
    _trained_run(settings, dataset, seed, tuning, load=False)


def _tuning_job(settings: RunSettings, job: tuple) -> dict[str, dict[str, float]]:
    """One tuning plan (`_tuning_plan`) on a trained tuning seed: job = (dataset, seed, method, its β,
    whether each β is planned alone)."""
    dataset, seed, name, betas, alone = job
    run_dir, trained, plan_once = _trained_run(settings, dataset, seed, tuning=True, load=False)
    return _tuning_plan(
        OmegaConf.create(settings.entry), run_dir, plan_once, trained["ckpt_path"], name, betas, alone
    )


def _run(settings: RunSettings, job: tuple[str | None, int, tuple[str, ...]]) -> dict:
    """One (dataset, seed, checkpoints) of a generic entry: train (or reuse the finished training), tune
    (unless tuned once on `tune.train_seed`), plan every method on each of `checkpoints`. Returns plain
    values (it may run in a worker process): `plans` (checkpoint → its plan payload; "best" is the last's
    plan when the best checkpoint is the last one or none was kept, None if another job plans the last), the
    tuning choices and, with "last", the distance estimator's errors (None without one)."""
    (dataset, seed, checkpoints), entry = job, OmegaConf.create(settings.entry)
    # a job of the best checkpoint alone needs no system or data (`_best_checkpoint` reads the folder)
    load = "last" in checkpoints
    run_dir, trained, plan_once = _trained_run(settings, dataset, seed, load=load)
    errors = None
    if load and trained["system"].distance is not None:
        errors = _distance_errors(trained["system"].distance, trained["datamodule"], seed)
    last = trained["ckpt_path"]
    if settings.tuned is not None:  # tuned once on tune.train_seed
        tuned = settings.tuned[dataset]
    elif settings.grids:
        tuned = _tune(entry, settings.grids, run_dir, plan_once, last)
    else:
        tuned = {}
    chosen = [f"planners.{name}.beta={result['beta']}" for name, result in tuned.items()]
    plans = {}
    for checkpoint in checkpoints:
        ckpt = last if checkpoint == "last" else _best_checkpoint(run_dir, trained)
        if checkpoint == "best" and (not ckpt or _same_step(Path(ckpt), Path(last))):
            # the best checkpoint is the last one: planning it again repeats it (None: another job plans it)
            plans["best"] = plans.get("last")
            continue
        plan_root = run_dir / ("plan" if checkpoint == "last" else f"plan_{checkpoint}")
        plans[checkpoint] = plan_once(ckpt, plan_root / "methods", [*chosen, *settings.methods])
    return {"plans": plans, "tuned": tuned, "distance_errors": errors}


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


def _best_checkpoint(run_dir: Path, trained: dict) -> str:
    """ModelCheckpoint's best (lowest val/loss) checkpoint of a run: from the trainer, or, for a reused
    run, the one epoch checkpoint it kept ("" if none)."""
    if trained.get("trainer") is not None:
        return trained["trainer"].checkpoint_callback.best_model_path
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


def _tune(
    entry: DictConfig, grids: dict[str, list[float]], run_dir: Path, plan_once, ckpt: str
) -> dict[str, dict]:
    """Each method in `tune.methods` gets the β of `tune.betas` with the best `tune.metric` (default: the
    lowest achieved cost; `tune.mode: max` for scores) on a separate task set or episode seed range
    (`tune.task_seed`), planned with the checkpoint `ckpt` of this run: the table's own tasks and episodes
    never choose a setting."""
    alone = _runs_betas_alone(entry, ckpt)
    achieved = [
        _tuning_plan(entry, run_dir, plan_once, ckpt, name, betas, alone)
        for name, betas in _tuning_plans(grids, alone)
    ]
    return _choose(entry.tune, grids, achieved)


def _runs_betas_alone(entry: DictConfig, ckpt: str) -> bool:
    """Whether the entry's plans of `ckpt` (`_plan_overrides`) run each β of a grid alone (the evaluator
    does not stack them into one batch, e.g. MPC episodes): then a grid's β are planned apart, which gives
    the same numbers and lets them spread over workers."""
    from sgp_lightning.models import read_hparams
    from sgp_lightning.plan import plan_evaluator

    cfg = compose_plan_config(_plan_overrides(entry, ckpt, []))
    return not plan_evaluator(cfg, read_hparams(ckpt).get("evaluator")).stack


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
    """Each tuned method's β with the best metric over its grid, from the tuning plans' `achieved` values."""
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
