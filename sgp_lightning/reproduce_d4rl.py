"""The D4RL table (paper Table 1): for each dataset of one env, make the data, train per seed, evaluate every
method by MPC episodes, and report the D4RL-normalised score, mean ± std over seeds, last and best.

- Data: D4RL-layout files regenerated into DIR/data/ by the collector from the committed behaviour
  policies (fixed collection seed), so the table does not depend on files lying around.
- last: the final checkpoint; best: the checkpoint with the lowest validation loss (ModelCheckpoint's
  best epoch), evaluated again only when it is not the last one.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sgp_lightning.analysis.common import run_record, write_report
from sgp_lightning.data.collect import collect, dataset_name
from sgp_lightning.envs.mujoco import mujoco_task
from sgp_lightning.errors import require
from sgp_lightning.pieces import is_finished, map_runs, mark_finished, plan_piece, settings_key, train_piece
from sgp_lightning.utils import set_threads, write_json


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def reproduce_d4rl(cfg: DictConfig, compose) -> dict:
    entry = cfg.reproduce
    task = mujoco_task(entry.env)
    require(
        len(entry.datasets) > 0 and len(entry.seeds) > 0,
        "reproduce.datasets and reproduce.seeds must be non-empty",
    )
    out = Path(cfg.output_dir)
    start = time.perf_counter()
    threads = f"num_threads={cfg.num_threads}"
    # The behaviour-policy MLPs' float rounding depends on the thread count, and a rounding difference
    # grows into different trajectories: collect with the run's threads, not torch's default.
    set_threads(cfg.num_threads)
    fresh = bool(entry.get("fresh", False))  # reproduce.fresh=true: ignore the finished pieces in DIR
    paths, collected = {}, {}
    for dataset in entry.datasets:
        paths[dataset] = str(out / "data" / f"{dataset_name(entry.env, dataset)}.hdf5")
        collected[dataset] = _collect_once(Path(paths[dataset]), OmegaConf.create({
            "env": entry.env, "dataset": dataset, "n": int(entry.collect.n), "num_envs": int(entry.collect.num_envs),
            "seed": int(entry.collect.seed), "policy": None, "output": paths[dataset],
        }), fresh)  # fmt: skip
    # Every (dataset, seed) trains and evaluates on its own: in this process, or reproduce.workers at once.
    pairs = [(dataset, int(seed)) for dataset in entry.datasets for seed in entry.seeds]
    run = functools.partial(
        _dataset_seed_run,
        OmegaConf.to_container(entry, resolve=True),
        str(out),
        threads,
        fresh,
        paths,
        compose,
    )
    evaluated = dict(zip(pairs, map_runs(run, pairs, int(entry.get("workers", 1))), strict=True))
    datasets: dict[str, dict] = {}
    for dataset in entry.datasets:
        runs: dict[str, dict[str, list[float]]] = {}  # method -> {"last": [...], "best": [...]}
        seconds: dict[str, list[float]] = {}
        lengths: dict[str, list[float]] = {}  # mean episode length per seed (last checkpoint)
        for seed in entry.seeds:
            last, best = evaluated[(dataset, int(seed))]
            for method in last:
                scores = runs.setdefault(method, {"last": [], "best": []})
                scores["last"].append(last[method]["normalized_score"])
                scores["best"].append(best[method]["normalized_score"])
                seconds.setdefault(method, []).append(last[method]["seconds_per_step"])
                lengths.setdefault(method, []).append(last[method]["episode_length"])
        datasets[dataset] = {
            "file": paths[dataset],
            "rows": collected[dataset]["rows"],
            # The collector's mean return over whole episodes (not the ones its step budget cut).
            "dataset_return": collected[dataset]["return_mean"],
            "dataset_normalized_score": float(task.normalized_score(collected[dataset]["return_mean"])),
            "methods": {
                method: {
                    "last": _mean_std(scores["last"]),
                    "best": _mean_std(scores["best"]),
                    "per_seed_last": scores["last"],
                    "per_seed_episode_length": lengths[method],
                    "seconds_per_step": statistics.fmean(seconds[method]),
                }
                for method, scores in runs.items()
            },
        }
    payload = {
        **run_record(cfg, start),
        "env": task.gym_id,
        "seeds": list(entry.seeds),
        "train_overrides": list(entry.train_overrides),
        "plan_overrides": list(entry.plan_overrides),
        "collect": OmegaConf.to_container(entry.collect),
        "datasets": datasets,
        "paper": OmegaConf.to_container(entry.paper) if entry.get("paper") else None,
    }
    write_report(out, payload, d4rl_markdown(payload))
    return payload


def _dataset_seed_run(
    entry: dict, out: str, threads: str, fresh: bool, paths: dict, compose, pair: tuple[str, int]
) -> tuple[dict, dict]:  # fmt: skip
    """Train one (dataset, seed) (or reuse the finished training) and evaluate its last and best checkpoints:
    (last, best), each method → its plan.py summary. Plain values: it may run in a worker process."""
    entry, (dataset, seed) = OmegaConf.create(entry), pair
    run_dir = Path(out) / "runs" / dataset / f"seed_{seed}"
    train_cfg = compose("train", [
        f"experiment=d4rl/{entry.env}_{dataset}", *entry.train_overrides, f"domain.datamodule.dataset='{paths[dataset]}'",
        f"seed={seed}", threads, f"paths.output_dir='{run_dir}'", "trainer.enable_progress_bar=false",
    ])  # fmt: skip
    trained_key, trained = train_piece(run_dir, train_cfg, fresh)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    best_ckpt = _best_checkpoint(run_dir, trained)  # lowest val/loss

    def evaluate(label: str, ckpt: Path) -> dict:
        plan_dir = run_dir / ("plan_" + label)
        plan_cfg = compose("plan", [
            *entry.plan_overrides, f"methods=[{','.join(entry.methods)}]", f"ckpt_path='{ckpt}'",
            f"seed={seed}", f"output_dir='{plan_dir}'", threads,
        ])  # fmt: skip
        return plan_piece(plan_dir, plan_cfg, f"{trained_key}:{Path(ckpt).name}", fresh)["methods"]

    last = evaluate("last", last_ckpt)
    same = not best_ckpt or _same_step(Path(best_ckpt), last_ckpt)
    return last, (last if same else evaluate("best", Path(best_ckpt)))


def _collect_once(path: Path, settings, fresh: bool) -> dict:
    """collect(settings) into `path`, or the summary of the same collection finished there before."""
    key, summary = settings_key(OmegaConf.to_container(settings)), path.with_suffix(".json")
    marker = f".{path.name}.finished"
    if not fresh and is_finished(path.parent, key, marker) and path.is_file() and summary.is_file():
        return json.loads(summary.read_text())
    collected = collect(settings)
    write_json(summary, collected)
    mark_finished(path.parent, key, marker)
    return collected


def _best_checkpoint(run_dir: Path, trained: dict | None) -> str:
    """ModelCheckpoint's best (lowest val/loss) checkpoint of a run: from the trainer, or, for a reused
    run, the one epoch checkpoint it kept ("" if none)."""
    if trained is not None:
        return trained["trainer"].checkpoint_callback.best_model_path
    kept = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    return str(kept[-1]) if kept else ""


def _same_step(best: Path, last: Path) -> bool:
    """Whether ModelCheckpoint's best checkpoint is the last one (then evaluating it again would repeat it)."""
    from sgp_lightning.models import read_checkpoint

    return read_checkpoint(str(best))["global_step"] == read_checkpoint(str(last))["global_step"]


def d4rl_markdown(payload: dict) -> str:
    methods = list(next(iter(payload["datasets"].values()))["methods"])
    header = ["dataset", "data return (score)"] + [f"{m} last / best" for m in methods]
    paper = payload.get("paper") or {}
    if paper:
        header.append("paper: BC / MOPO / SGP")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, d in payload["datasets"].items():
        row = [dataset, f"{d['dataset_return']:.0f} ({d['dataset_normalized_score']:.1f})"]
        for method in methods:
            m = d["methods"][method]
            last = f"{m['last'][0]:.1f} ± {m['last'][1]:.1f}"
            best = f"{m['best'][0]:.1f} ± {m['best'][1]:.1f}"
            row.append(f"{last} / {best}")
        if paper:
            row.append(str(paper.get(dataset, "–")))
        lines.append("| " + " | ".join(row) + " |")
    m = payload["machine"]
    seconds = ", ".join(
        f"{method} {statistics.fmean(d['methods'][method]['seconds_per_step'] for d in payload['datasets'].values()):.3g}"
        for method in methods
    )
    return (
        f"### {payload['title']}\n\n" + "\n".join(lines) + "\n\n"
        f"D4RL-normalised score ×100 on {payload['env']} (gymnasium v5, D4RL-normalised), mean ± std over seeds "
        f"{payload['seeds']}; each seed's score is the mean over its evaluation episodes. last: final checkpoint; "
        "best: lowest validation loss. Data return: mean episode return of the generated dataset (its "
        f"normalised score). Seconds per control step: {seconds}.\n"
        f"Data: {payload['collect']['n']} transitions per behaviour policy (collector seed {payload['collect']['seed']}). "
        f"Command: `{payload['command']}` (train overrides: {payload['train_overrides']}; plan overrides: "
        f"{payload['plan_overrides']}); machine: {m['processor']}, {m['cpu_count']} cores, torch {m['torch']} with "
        f"{m['torch_threads']} thread(s), {m['cuda'] or 'no GPU'}; wall time {payload['wall_seconds'] / 60:.1f} min.\n"
    )
