"""reproduce(cfg): train what one results table needs, plan every method it compares, write the table."""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from sgp_lightning.plan import plan
from sgp_lightning.report import methods_table
from sgp_lightning.train import train
from sgp_lightning.utils import machine_info, write_json


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
    out["per_seed"] = [
        {k: run[k] for k in ("cost_planned", "cost_achieved", "model_error", "seconds")} for run in per_seed
    ]
    out["per_task"] = [task for run in per_seed for task in run["per_task"]]
    return out


def reproduce(cfg: DictConfig) -> dict:
    entry = cfg.reproduce
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    threads = f"num_threads={cfg.num_threads}"
    if entry.get("beta_sweep") is not None:
        methods = {f"beta={b:g}": [f"planners.sgp.beta={b}", "methods=[sgp]"] for b in entry.beta_sweep}
    else:
        methods = {"": [f"methods=[{','.join(entry.methods)}]"]}

    per_method: dict[str, list[dict]] = {}
    domain = None
    for seed in entry.seeds:
        run_dir = out / "runs" / f"seed_{seed}"
        train_cfg = _compose(
            "train",
            [
                *entry.train_overrides,
                f"seed={seed}",
                threads,
                f"paths.output_dir='{run_dir}'",
                "trainer.enable_progress_bar=false",
            ],
        )
        train(train_cfg)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        for label, overrides in methods.items():
            plan_dir = run_dir / "plan" / (label.replace("=", "_") or "methods")
            plan_cfg = _compose(
                "plan",
                [
                    *entry.plan_overrides,
                    *overrides,
                    f"ckpt_path='{ckpt}'",
                    f"seed={seed}",
                    f"output_dir='{plan_dir}'",
                    f"mpc={str(bool(entry.mpc)).lower()}",
                    threads,
                ],
            )
            result = plan(plan_cfg)
            domain = result["domain"]
            for name, metrics in result["methods"].items():
                per_method.setdefault(label or name, []).append(metrics)
        for figure in ("plan.png", "image_rollouts.png"):
            if seed == entry.seeds[0] and (run_dir / "plan" / "methods" / figure).exists():
                shutil.copy(run_dir / "plan" / "methods" / figure, out / figure)

    methods_summary = {name: _aggregate(runs) for name, runs in per_method.items()}
    command = f"python reproduce.py {entry.name} output_dir={cfg.output_dir}"
    payload = {
        "name": entry.name,
        "title": entry.title,
        "domain": domain,
        "command": command,
        "argv": sys.argv,
        "seeds": list(entry.seeds),
        "train_overrides": list(entry.train_overrides),
        "mpc": bool(entry.mpc),
        "machine": machine_info(),
        "wall_seconds": time.perf_counter() - start,
        "methods": methods_summary,
        "paper": OmegaConf.to_container(entry.paper) if entry.get("paper") else None,
    }
    if entry.get("beta_sweep") is not None:
        from sgp_lightning.plotting import plot_sweep, save_figure

        rows = [{"beta": float(b), **methods_summary[f"beta={b:g}"]} for b in entry.beta_sweep]
        save_figure(plot_sweep(rows), out / "sweep.png")
    write_json(out / "results.json", payload)
    table = _markdown(payload)
    (out / "table.md").write_text(table)
    print(table)
    return payload


def _markdown(payload: dict) -> str:
    m = payload["machine"]
    seeds = payload["seeds"]
    return (
        f"### {payload['title']}\n\n"
        f"{methods_table(payload['methods'])}\n\n"
        f"Mean over {len(seeds)} seeds {seeds} (each the mean over the domain's tasks); achieved cost ± std over "
        f"seeds; gap is the mean over seeds of |achieved − planned|.\n"
        f"Command: `{payload['command']}` (train overrides: {payload['train_overrides']}); "
        f"machine: {m['processor']}, {m['cpu_count']} cores, torch {m['torch']} with {m['torch_threads']} thread(s), "
        f"{m['cuda'] or 'no GPU'}; wall time {payload['wall_seconds'] / 60:.1f} min.\n"
        + ("" if not payload.get("paper") else f"\nPaper: {payload['paper']}\n")
    )
