"""`python reproduce.py policy_search output_dir=DIR` (paper B.5): a feedback policy trained by first-order
policy search with the score penalty, against open-loop SGP and SGP + MPC, on the pit domain."""

from __future__ import annotations

import time

import torch
from omegaconf import OmegaConf

from sgp_lightning.analysis.common import Report, planner_settings, provenance, train_run
from sgp_lightning.planning import frozen, make_planner, plan_and_evaluate
from sgp_lightning.planning.policy_search import PolicySearch, evaluate_feedback_policy


def reproduce_policy_search(cfg, compose) -> dict:
    report, entry = Report(cfg), cfg.reproduce
    trained = train_run(cfg, compose)
    system, env = trained["system"], trained["env"]
    tasks = env.tasks()
    planners = planner_settings(compose, entry.plan_overrides)
    low, high = torch.tensor(list(entry.start_low)), torch.tensor(list(entry.start_high))

    def sample_x0(n, generator):
        return low + (high - low) * torch.rand(n, 2, generator=generator)

    evaluations, histories = [], {}
    for label, beta in (("policy search, SGP penalty", entry.beta), ("policy search, β = 0", 0.0)):
        planner = make_planner({**planners["sgp"], "beta": beta})  # β = 0: no penalty
        tic = time.perf_counter()
        with frozen(system):
            problem = planner.problem(system, env, env.horizon)
            search = PolicySearch(**OmegaConf.to_container(entry.policy_search), seed=entry.seed)
            policy, history = search.train(problem, sample_x0, tasks.goal[0], torch.tensor(env.action_limit))
        seconds = time.perf_counter() - tic
        evaluations.append(evaluate_feedback_policy(label, policy, env, tasks, system.dynamics, seconds))
        histories[label] = [history[0], history[-1]]
    for label, mpc in (("SGP open loop", False), ("SGP + MPC", True)):
        torch.manual_seed(entry.seed)
        evaluations.append(plan_and_evaluate(system, env, tasks, planners["sgp"], mpc=mpc, method=label))
    rows = {
        ev.method: {
            "cost_achieved": float(ev.cost_achieved.mean()),
            "true_steps_in_pit": float(ev.time_in_trap.mean()),
            "seconds": ev.seconds,
            **({"objective_first_last": histories[ev.method]} if ev.method in histories else {}),
        }
        for ev in evaluations
    }
    payload = {
        "methods": rows, "seed": entry.seed,
        "settings": OmegaConf.to_container(entry),
        **report.record(),
    }  # fmt: skip
    from sgp_lightning.plotting import plot_plans

    report.save_figure(plot_plans(env, evaluations), "policy_search.png")
    columns = ["method", "achieved cost", "true steps in pit", "seconds"]
    cells = [
        [label, f"{r['cost_achieved']:.3g}", f"{r['true_steps_in_pit']:.1%}", f"{r['seconds']:.3g}"]
        for label, r in rows.items()
    ]
    note = (
        f"{len(tasks)} pit tasks, T = {env.horizon}. Policy search: {OmegaConf.to_container(entry.policy_search)}, "
        f"initial states uniform in {list(entry.start_low)} … {list(entry.start_high)}, β = {entry.beta}; its "
        "seconds are training time, after which acting is one network call per step. SGP: planner_set as in "
        f"`{list(entry.plan_overrides)}`, MPC re-plans every step (planner.mpc). Train overrides: "
        f"{list(entry.train_overrides)}; seed {entry.seed}. {provenance(payload)}"
    )
    return report.write(payload, report.table(columns, cells, note))
