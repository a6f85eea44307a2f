"""Paper E.1 (Fig. 8): trajectory stitching. Demonstrations go bottom-left → top-right and top-left →
bottom-right only; the task asks for bottom-left → bottom-right. SGP's plan should follow one
demonstrated route to where the two cross and the other from there: a trajectory no demonstration took,
made of pieces of the data. Reported: achieved cost, distance to the goal at the end, and the planned
states' distance to the nearest demonstrated state.
"""

from __future__ import annotations

import torch

from sgp_lightning.analysis.common import Report, planner_settings, provenance, train_run, tune_open_loop
from sgp_lightning.distance import nearest_distance
from sgp_lightning.planning import plan_and_evaluate
from sgp_lightning.tables import tuning_markdown


def reproduce_stitching(cfg, compose) -> dict:
    """`python reproduce.py stitching output_dir=DIR`: train on the demonstrations, plan every method."""
    from sgp_lightning.plotting import plot_plans

    report, entry = Report(cfg), cfg.reproduce
    trained = train_run(cfg, compose)
    system, env, datamodule = trained["system"], trained["env"], trained["datamodule"]
    data = datamodule.all_data["x"]
    tasks = env.tasks()
    planners = planner_settings(compose, entry.plan_overrides)
    tuning = (
        tune_open_loop(system, env, planners, entry.tune, entry.seed, data) if entry.get("tune") else None
    )
    evaluations, methods = [], {}
    for name in entry.methods:
        torch.manual_seed(entry.seed)
        evaluation = plan_and_evaluate(system, env, tasks, planners[name], method=name)
        gap = nearest_distance(evaluation.plan.states.detach(), data)
        final_error = (evaluation.true_states[:, -1] - tasks.goal).norm(dim=-1)
        methods[name] = {
            "cost_planned": float(evaluation.cost_planned.mean()),
            "cost_achieved": float(evaluation.cost_achieved.mean()),
            "distance_to_goal": float(final_error.mean()),
            "plan_distance_to_data_mean": float(gap.mean()),
            "plan_distance_to_data_max": float(gap.max()),
            "planner": planners[name],
        }
        evaluations.append(evaluation)
    report.save_figure(plot_plans(env, evaluations, data), "plan.png")
    payload = {
        "methods": methods, "seed": entry.seed,
        "train_overrides": list(entry.train_overrides), "plan_overrides": list(entry.plan_overrides),
        "tuning": tuning,
        "num_demonstration_states": len(data),
        **report.record(),
    }  # fmt: skip
    columns = ["method", "cost of plan", "achieved cost", "distance to goal at T",
               "plan's distance to data: mean / max"]  # fmt: skip
    rows = [
        [name, f"{r['cost_planned']:.3g}", f"{r['cost_achieved']:.3g}", f"{r['distance_to_goal']:.3g}",
         f"{r['plan_distance_to_data_mean']:.3g} / {r['plan_distance_to_data_max']:.3g}"]
        for name, r in methods.items()
    ]  # fmt: skip
    note = (
        f"{len(tasks)} tasks from around (−0.8, −0.8) to (0.8, −0.8), T = {env.horizon}; {len(data)} demonstrated "
        f"states. Train overrides: {list(entry.train_overrides)}; plan overrides: {list(entry.plan_overrides)}; "
        f"seed {entry.seed}. {provenance(payload)}\n{tuning_markdown(tuning)}"
    )
    return report.write(payload, report.table(columns, rows, note))
