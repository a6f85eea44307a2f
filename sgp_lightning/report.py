"""Tables and sweep reports from results.json / metrics.json files."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path

from sgp_lightning.errors import require
from sgp_lightning.utils import write_text

_METRICS = ("cost_planned", "cost_achieved", "model_error")


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


# Columns shown only when some method reports them (domains with a success criterion or a data region).
_OPTIONAL_COLUMNS = {
    "success_rate": "success rate",
    "outside_data": "plan outside data",
    "time_in_trap": "true steps in pit",
    "iterations_to_threshold": "iterations to threshold",
    "failed_tasks": "failed tasks",  # plans that became non-finite, left out of the means
}


def methods_table(methods: Mapping[str, Mapping]) -> str:
    """Markdown table: one row per method with planned/achieved cost, their gap, model error, seconds,
    and the optional columns (success rate, share of planned steps outside the data, iterations to a
    true-cost threshold) where some method reports them."""
    optional = [k for k in _OPTIONAL_COLUMNS if any(k in m for m in methods.values())]
    header = ["method", "cost of plan", "achieved cost", "\\|achieved − plan\\|", "model error", "seconds"]
    header += [_OPTIONAL_COLUMNS[k] for k in optional]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        gap = m.get("gap", abs(m["cost_achieved"] - m["cost_planned"]))
        row = [m["cost_planned"], m["cost_achieved"], gap, m["model_error"], m.get("seconds")]
        row += [len(m.get(k, [])) if k == "failed_tasks" else m.get(k) for k in optional]
        if "cost_achieved_std" in m:  # aggregated over seeds
            row[1] = f"{m['cost_achieved']:.4g} ± {m['cost_achieved_std']:.2g}"
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def episodes_table(methods: Mapping[str, Mapping]) -> str:
    """Markdown table for episodic (D4RL) domains: D4RL-normalised score and return, mean ± std (over
    episodes, or over seeds where aggregated), episode length and seconds per control step."""
    header = ["method", "normalized score", "return", "episode length", "seconds per step"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        row = [
            f"{m['normalized_score']:.1f} ± {m['normalized_score_std']:.1f}",
            f"{m['return_mean']:.0f} ± {m['return_std']:.0f}",
            f"{m['episode_length']:.0f}",
            _fmt(m.get("seconds_per_step")),
        ]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def held_out_table(methods: Mapping[str, Mapping]) -> str:
    """Markdown table for the offline domain: each plan's predicted return beside the data's own over the
    same steps, its distance to the training data (exact, smoothed), the model error at the first and last
    step of the horizon, and the gymnasium episodes' return where they were run."""
    header = ["method", "predicted return", "data's return", "distance to data", "smoothed d²",
              "model error (first → last step)", "seconds"]  # fmt: skip
    episodes = any("episodes" in m for m in methods.values())
    header += ["episode return", "normalized score"] if episodes else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        curve = m["model_error_horizon"]
        row = [m["predicted_return"], m["data_return"], m.get("distance_exact"), m.get("distance_smoothed_sq"),
               f"{_fmt(curve[0])} → {_fmt(curve[-1])}", m.get("seconds")]  # fmt: skip
        if episodes:
            e = m.get("episodes") or {}
            row += [e.get("return_mean"), e.get("normalized_score")]
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def gather_sweep(sweep_dir: str | Path) -> list[dict]:
    """One row per job of a `train.py -m` sweep: its hparams and final plan/* metrics (metrics.json), and
    one per failed job (status.json: its overrides and error, metrics NaN)."""
    from sgp_lightning.sweep import failed_jobs

    files = sorted(Path(sweep_dir).glob("**/metrics.json"))
    failed = failed_jobs(sweep_dir)
    require(
        files or failed, f"no metrics.json under {sweep_dir}: is it a `python train.py -m ...` sweep folder?"
    )
    rows = [
        {"job": job["job"], "status": "failed", "overrides": " ".join(job["overrides"]), "error": job["error"],
         **dict.fromkeys(_METRICS, math.nan)}
        for job in failed
    ]  # fmt: skip
    for path in files:
        payload = json.loads(path.read_text())
        metrics = payload["metrics"]
        beta = payload["hparams"].get("beta")
        row = {**payload["hparams"], "beta": math.inf if beta == "inf" else beta, "job": str(path.parent),
               "status": "finished"}  # fmt: skip
        for key in ("cost_planned", "cost_achieved", "model_error"):
            row[key] = metrics.get(f"plan/{key}", math.nan)
        rows.append(row)
    return rows


def sweep_table(rows: list[dict], keys: tuple[str, ...] = ("beta", "sigma_max", "sigma_min", "seed")) -> str:
    """Finished jobs by the hparams the sweep varied, then failed jobs with their overrides and error."""
    finished = [r for r in rows if r.get("status") != "failed"]
    failed = [r for r in rows if r.get("status") == "failed"]
    varied = [k for k in keys if len({str(r.get(k)) for r in finished}) > 1] or list(keys[:1])
    header = [*varied, "cost of plan", "achieved cost", "model error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(finished, key=lambda r: tuple(float(r.get(k) or 0) for k in varied)):
        values = [r.get(k) for k in varied] + [r["cost_planned"], r["cost_achieved"], r["model_error"]]
        lines.append("| " + " | ".join(_fmt(v) for v in values) + " |")
    if failed:
        lines += ["", f"Failed jobs ({len(failed)}):", "", "| job | overrides | error |", "|---|---|---|"]
        lines += [f"| {Path(r['job']).name} | {r['overrides']} | {r['error']} |" for r in failed]
    return "\n".join(lines)


def write_sweep_report(sweep_dir: str | Path) -> str:
    """sweep.md (table) and sweep.png (cost and model error against β, Fig. 5) inside sweep_dir."""
    from sgp_lightning.plotting import plot_sweep

    rows = gather_sweep(sweep_dir)
    table = sweep_table(rows)
    write_text(Path(sweep_dir, "sweep.md"), f"Sweep {sweep_dir} ({len(rows)} jobs)\n\n{table}\n")
    rows = [r for r in rows if r.get("status") != "failed"]  # the figure shows finished jobs
    betas = sorted({r["beta"] for r in rows if r["beta"] is not None and math.isfinite(r["beta"])})
    if len(betas) > 1:  # mean over the jobs (e.g. seeds) that share a β
        means = [
            {"beta": b, **{k: statistics.fmean(r[k] for r in rows if r["beta"] == b) for k in _METRICS}}
            for b in betas
        ]
        plot_sweep(means).savefig(Path(sweep_dir, "sweep.png"), dpi=110)
    return table


if __name__ == "__main__":
    import sys

    from sgp_lightning.utils import clean_errors

    if len(sys.argv) != 2:
        sys.exit("usage: python -m sgp_lightning.report SWEEP_DIR   (a `python train.py -m ...` folder)")
    with clean_errors():
        print(write_sweep_report(sys.argv[1]))
        print(f"wrote {Path(sys.argv[1], 'sweep.md')}")
