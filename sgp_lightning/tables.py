"""What a generic reproduce entry reports: its runs' plan results, summarised over seeds into results.json
fields and a markdown table. An entry picks its table with `table: {_target_: …}` (conf/reproduce/):

- `CostTable` (the default): open-loop or MPC plans of the domain's tasks, cost of plan vs achieved cost per
  method, mean over seeds (the 2-D domains, cart-pole, pixel).
- `ScoreTable`: MPC episodes on each D4RL dataset, D4RL-normalised score per method, mean ± std over seeds,
  for the last and the best checkpoint (paper Table 1).

Both take `runs`, keyed by (dataset, seed) (dataset None for entries without datasets), each a run of
`sgp_lightning.reproduce`: `{"plans": {checkpoint: plan.py payload}, "tuned": …, "distance_errors": …}`,
where `checkpoint` is one of the entry's `checkpoints` (last, best); a β sweep's rows are its plan's
`sgp@beta=…` methods, reported as `beta=…`.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sgp_lightning.plan import beta_label
from sgp_lightning.report import methods_table


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _machine_line(payload: dict) -> str:
    m = payload["machine"]
    return (
        f"machine: {m['processor']}, {m['cpu_count']} cores, torch {m['torch']} with {m['torch_threads']} "
        f"thread(s), {m['cuda'] or 'no GPU'}; wall time {payload['wall_seconds'] / 60:.1f} min."
    )


class CostTable:
    """Cost of plan and achieved cost per method (or per β of a sweep), mean over seeds of each seed's
    task-mean metrics, with the tuning choices and the distance estimator's error where the entry has them."""

    def summarize(self, entry: DictConfig, runs: dict, data: dict, out: Path) -> dict:
        per_method: dict[str, list[dict]] = {}
        distance_errors: list[list[dict]] = []  # per seed, per level (systems with a distance estimator)
        domain = None
        sweep = {beta_label("sgp", b): f"beta={b:g}" for b in entry.get("beta_sweep") or []}  # row names
        for run in runs.values():
            if run["distance_errors"] is not None:
                distance_errors.append(run["distance_errors"])
            result = run["plans"]["last"]
            domain = result["domain"]
            for name, metrics in result["methods"].items():
                per_method.setdefault(sweep.get(name, name), []).append(metrics)
        first_plans = out / "runs" / f"seed_{entry.seeds[0]}" / "plan" / "methods"
        for figure in ("plan.png", "image_rollouts.png"):
            if (first_plans / figure).exists():
                shutil.copy(first_plans / figure, out / figure)

        methods = {name: _aggregate(seed_runs) for name, seed_runs in per_method.items()}
        threshold = entry.get("convergence_threshold")
        if threshold is not None:  # how fast each method's true cost gets there (paper Fig. 2F)
            for metrics in methods.values():
                if "convergence" in metrics:
                    curve = metrics["convergence"]
                    reached = [
                        i
                        for i, c in zip(curve["iteration"], curve["true_cost"], strict=True)
                        if c <= threshold
                    ]
                    metrics["iterations_to_threshold"] = reached[0] if reached else "never"
        payload = {
            "domain": domain,
            "mpc": bool(entry.mpc),
            "methods": methods,
            "paper": OmegaConf.to_container(entry.paper) if entry.get("paper") else None,
            "convergence_threshold": threshold,
        }
        if distance_errors:  # mean over seeds, per level
            payload["distance_estimator"] = [
                {key: statistics.fmean(seed_rows[k][key] for seed_rows in distance_errors) for key in rows}
                for k, rows in enumerate(distance_errors[0])
            ]
        if any("convergence" in m for m in methods.values()):
            from sgp_lightning.plotting import plot_convergence, save_figure

            save_figure(plot_convergence(methods), out / "convergence.png")  # mean over seeds
        if entry.get("beta_sweep") is not None:
            from sgp_lightning.plotting import plot_sweep, save_figure

            rows = [{"beta": float(b), **methods[f"beta={b:g}"]} for b in entry.beta_sweep]
            save_figure(plot_sweep(rows), out / "sweep.png")
        return payload

    def markdown(self, payload: dict) -> str:
        seeds = payload["seeds"]
        notes = ""
        if payload.get("convergence_threshold") is not None:
            notes += (
                f"Iterations to threshold: the first recorded optimiser iteration at which the mean true cost "
                f"of the current plan is ≤ {payload['convergence_threshold']:g} (recorded every few iterations).\n"
            )
        for key, text in _NOTES.items():
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
            f"Mean over {len(seeds)} seeds {seeds} (each the mean over the domain's tasks); achieved cost ± std "
            f"over seeds; gap is the mean over seeds of |achieved − planned|.\n{notes}"
            f"Command: `{payload['command']}` (train overrides: {payload['train_overrides']}); "
            + _machine_line(payload)
            + "\n"
            + ("" if not payload.get("paper") else f"\nPaper: {payload['paper']}\n")
            + distance
            + tuning_markdown(payload.get("tuning"))
        )


_NOTES = {
    "success_rate": "Success rate: share of tasks whose true rollout meets the domain's success criterion.\n",
    "outside_data": "Plan outside data: share of planned steps outside the region the data was drawn from.\n",
    "time_in_trap": "True steps in pit: share of the true trajectory's states inside the pit (actuation lost).\n",
}


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


def best_beta(betas: Sequence[float], achieved: Mapping[str, float], mode: str | None = None) -> float:
    """The β of `betas` whose metric (`achieved`, keyed by f"{β:g}") is lowest (`mode` min or None) or
    highest (max): the first of equals (the smallest listed) wins, and a diverged plan (NaN) never does."""
    sign = -1.0 if mode == "max" else 1.0
    return float(
        min(betas, key=lambda b: math.inf if math.isnan(achieved[f"{b:g}"]) else sign * achieved[f"{b:g}"])
    )


def tuning_record(entry: DictConfig, runs: dict, tuned_once: dict | None) -> dict | None:
    """results.json's `tuning`: the tuning set, and each tuning's sweep and choice (`reproduce._choose`): per table seed,
    or per dataset when β was tuned once on `tune.train_seed`."""
    if not entry.get("tune"):
        return None
    tune = entry.tune
    record = {"task_seed": tune.task_seed, "metric": tune.get("metric") or "cost_achieved"}
    if tuned_once is not None:
        record.update(train_seed=int(tune.train_seed), per_dataset={str(d): c for d, c in tuned_once.items()})
    else:
        record["per_seed"] = {str(seed): run["tuned"] for (_, seed), run in runs.items()}
    return record


def tuning_markdown(tuning: dict | None) -> str:
    """One row per tuning (seed, or dataset) and tuned method: the metric on the tuning tasks or episodes at
    each β, and the choice."""
    if not tuning:
        return ""
    metric = {"cost_achieved": "achieved cost", "cost_achieved_near_data": "achieved cost"}.get(
        tuning.get("metric", "cost_achieved"), tuning.get("metric")
    )
    rule = metric
    if tuning.get("metric") == "cost_achieved_near_data":
        rule = (f"the lowest achieved cost among the β whose planned states all stay within "
                f"{tuning['max_distance_to_data']:g} of the data (the largest distance in brackets)")  # fmt: skip
    per_run = tuning.get("per_seed") or tuning["per_dataset"]

    def cell(result: dict, beta: str) -> str:
        gap = result.get("distance_to_data_by_beta", {}).get(beta)
        return f"{beta}: {result['achieved_by_beta'][beta]:.3g}" + (
            f" ({gap:.2g})" if gap is not None else ""
        )

    rows = [
        f"| {run} | {name} | "
        + ", ".join(cell(result, beta) for beta in result["achieved_by_beta"])
        + f" | {result['beta']:g} |"
        for run, methods in per_run.items()
        for name, result in methods.items()
    ]
    if "per_seed" in tuning:
        where, column = f"per seed on a separate task set (task_seed={tuning['task_seed']})", "seed"
    else:
        where = (f"per dataset on training seed {tuning['train_seed']} and tasks / episodes from seed "
                 f"{tuning['task_seed']}, none of them the table's")  # fmt: skip
        column = "dataset"
    return (
        f"\nβ chosen {where}, by {rule}:\n\n"
        f"| {column} | method | {metric} at each β | chosen β |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


class ScoreTable:
    """D4RL-normalised score per dataset and method, mean ± std over seeds (each seed's score is the mean over
    its evaluation episodes), for the last and the best checkpoint; the paper's column beside it."""

    def summarize(self, entry: DictConfig, runs: dict, data: dict, out: Path) -> dict:
        from sgp_lightning.envs.mujoco import mujoco_task

        task = mujoco_task(entry.env)
        datasets: dict[str, dict] = {}
        for dataset in entry.datasets:
            scores: dict[str, dict[str, list[float]]] = {}  # method -> {"last": [...], "best": [...]}
            seconds: dict[str, list[float]] = {}
            lengths: dict[str, list[float]] = {}  # mean episode length per seed (last checkpoint)
            for seed in entry.seeds:
                plans = runs[(dataset, int(seed))]["plans"]
                last, best = plans["last"]["methods"], plans.get("best", plans["last"])["methods"]
                for method in last:
                    method_scores = scores.setdefault(method, {"last": [], "best": []})
                    method_scores["last"].append(last[method]["normalized_score"])
                    method_scores["best"].append(best[method]["normalized_score"])
                    seconds.setdefault(method, []).append(last[method]["seconds_per_step"])
                    lengths.setdefault(method, []).append(last[method]["episode_length"])
            collected = data[dataset]["summary"]
            datasets[dataset] = {
                "file": data[dataset]["file"],
                "rows": collected["rows"],
                # The collector's mean return over whole episodes (not the ones its step budget cut).
                "dataset_return": collected["return_mean"],
                "dataset_normalized_score": float(task.normalized_score(collected["return_mean"])),
                "methods": {
                    method: {
                        "last": _mean_std(method_scores["last"]),
                        "best": _mean_std(method_scores["best"]),
                        "per_seed_last": method_scores["last"],
                        "per_seed_episode_length": lengths[method],
                        "seconds_per_step": statistics.fmean(seconds[method]),
                    }
                    for method, method_scores in scores.items()
                },
            }
        return {
            "env": task.gym_id,
            "plan_overrides": list(entry.plan_overrides),
            "collect": OmegaConf.to_container(entry.collect),
            "datasets": datasets,
            "paper": OmegaConf.to_container(entry.paper) if entry.get("paper") else None,
        }

    def markdown(self, payload: dict) -> str:
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
        seconds = ", ".join(
            f"{method} {statistics.fmean(d['methods'][method]['seconds_per_step'] for d in payload['datasets'].values()):.3g}"
            for method in methods
        )
        return (
            f"### {payload['title']}\n\n" + "\n".join(lines) + "\n\n"
            f"D4RL-normalised score ×100 on {payload['env']} (gymnasium v5, D4RL-normalised), mean ± std over "
            f"seeds {payload['seeds']}; each seed's score is the mean over its evaluation episodes. last: final "
            "checkpoint; best: lowest validation loss. Data return: mean episode return of the generated dataset "
            f"(its normalised score). Seconds per control step: {seconds}.\n"
            f"Data: {payload['collect']['n']} transitions per behaviour policy (collector seed "
            f"{payload['collect']['seed']}). Command: `{payload['command']}` (train overrides: "
            f"{payload['train_overrides']}; plan overrides: {payload['plan_overrides']}); "
            + _machine_line(payload)
            + "\n"
            + tuning_markdown(payload.get("tuning"))
        )
