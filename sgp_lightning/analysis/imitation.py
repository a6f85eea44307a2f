"""`python reproduce.py imitation output_dir=DIR` (paper B.6, D.1.2): with β = ∞ SGP drops the task cost and
plans for data likelihood only; on expert demonstrations that is imitation. Compared with behaviour
cloning on the same demonstrations, from start states on and off the demonstrated route."""

from __future__ import annotations

import torch

from sgp_lightning.analysis.common import Report, planner_settings, provenance, train_run
from sgp_lightning.distance import nearest_distance
from sgp_lightning.planning import plan_and_evaluate
from sgp_lightning.planning.policy_search import evaluate_feedback_policy


def reproduce_imitation(cfg, compose) -> dict:
    from sgp_lightning.plotting import plot_plans

    report, entry = Report(cfg), cfg.reproduce
    trained = train_run(cfg, compose)
    system, env, datamodule = trained["system"], trained["env"], trained["datamodule"]
    data = datamodule.all_data["x"]
    expert_end = torch.tensor(list(entry.expert_end))
    tasks = env.tasks()
    planners = planner_settings(compose, entry.plan_overrides)
    torch.manual_seed(entry.seed)
    landing = plan_and_evaluate(system, env, tasks, planners["data_landing"], method="SGP, β = ∞")
    bc = evaluate_feedback_policy("behaviour cloning", system.policy, env, tasks)  # acts on the true states
    start_offset = nearest_distance(tasks.x0[:, None], data)[:, 0]
    rows = {}
    for label, states in (
        ("SGP, β = ∞ (open loop)", landing.true_states),
        ("behaviour cloning", bc.true_states),
    ):
        gap = nearest_distance(states, data)
        rows[label] = {
            "distance_to_demonstrations_mean": float(gap[:, 1:].mean()),
            "distance_to_demonstrations_last": float(gap[:, -1].mean()),
            "distance_to_expert_end": float((states[:, -1] - expert_end).norm(dim=-1).mean()),
        }
    report.save_figure(plot_plans(env, [landing, bc], data), "imitation.png")
    payload = {
        "methods": rows, "seed": entry.seed,
        "start_offset_from_demonstrations": start_offset.tolist(),
        **report.record(),
    }  # fmt: skip
    columns = ["method", "true states' distance to the demonstrations: mean / at T",
               "distance to the expert's end point"]  # fmt: skip
    cells = [
        [label, f"{r['distance_to_demonstrations_mean']:.3g} / {r['distance_to_demonstrations_last']:.3g}",
         f"{r['distance_to_expert_end']:.3g}"]
        for label, r in rows.items()
    ]  # fmt: skip
    note = (
        f"{len(tasks)} start states at x = −0.8, y from {env.start_y_range[0]} to {env.start_y_range[1]} (up to "
        f"{float(start_offset.max()):.2f} from the demonstrations), T = {env.horizon}; the expert's route ends at "
        f"{list(entry.expert_end)}. Train overrides: {list(entry.train_overrides)}; seed {entry.seed}. "
        f"{provenance(payload)}"
    )
    return report.write(payload, report.table(columns, cells, note))
