"""`python reproduce.py policy_search output_dir=DIR` (paper B.5): a feedback policy trained by first-order
policy search with the score penalty, against open-loop SGP and SGP + MPC, on the pit domain."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sgp_lightning.analysis.common import planner_settings, provenance, run_record, train_run, write_report
from sgp_lightning.planning import Evaluation, PlanResult, build_problem, frozen, plan_and_evaluate
from sgp_lightning.planning.policy_search import PolicySearch, closed_loop


def reproduce_policy_search(cfg, compose) -> dict:

    entry = cfg.reproduce
    out = Path(cfg.output_dir)
    start = time.perf_counter()
    trained = train_run(cfg, compose)
    system, env = trained["system"], trained["env"]
    tasks = env.tasks()
    planners = planner_settings(compose, entry.plan_overrides)
    low, high = torch.tensor(list(entry.start_low)), torch.tensor(list(entry.start_high))

    def sample_x0(n, generator):
        return low + (high - low) * torch.rand(n, 2, generator=generator)

    rows, evaluations = {}, []
    for label, beta in (("policy search, SGP penalty", entry.beta), ("policy search, β = 0", 0.0)):
        planner_cfg = {**planners["sgp"], "beta": beta, "penalty": "score" if beta > 0 else "none"}
        tic = time.perf_counter()
        with frozen(system):
            problem = build_problem(system, env, planner_cfg, env.horizon)
            search = PolicySearch(**OmegaConf.to_container(entry.policy_search), seed=entry.seed)
            policy, history = search.train(problem, sample_x0, tasks.goal[0], torch.tensor(env.action_limit))
        seconds = time.perf_counter() - tic
        with torch.no_grad():
            true_states, actions = closed_loop(env.step, policy, tasks.x0, env.horizon)  # on the true state
            model_states, _ = closed_loop(system.dynamics, policy, tasks.x0, env.horizon)  # the model's view
            cost = env.cost(true_states, actions, tasks.goal)
            model_cost = env.cost(model_states, actions, tasks.goal)
        plan = PlanResult(actions, model_states, model_cost)
        evaluations.append(
            Evaluation(label, plan, true_states, model_cost, cost, torch.zeros(len(tasks)), seconds)
        )
        with torch.no_grad():
            rows[label] = {
                "cost_achieved": float(env.cost(true_states, actions, tasks.goal).mean()),
                "true_steps_in_pit": float(env.time_in_trap(true_states).mean()),
                "seconds": seconds,
                "objective_first_last": [history[0], history[-1]],
            }
    for label, mpc in (("SGP open loop", False), ("SGP + MPC", True)):
        torch.manual_seed(entry.seed)
        evaluation = plan_and_evaluate(system, env, tasks, planners["sgp"], mpc=mpc, method=label)
        evaluations.append(evaluation)
        rows[label] = {
            "cost_achieved": float(evaluation.cost_achieved.mean()),
            "true_steps_in_pit": float(evaluation.time_in_trap.mean()),
            "seconds": evaluation.seconds,
        }
    payload = {
        "methods": rows, "seed": entry.seed,
        "settings": OmegaConf.to_container(entry),
        **run_record(cfg, start),
    }  # fmt: skip
    from sgp_lightning.plotting import plot_plans, save_figure

    save_figure(plot_plans(env, evaluations), out / "policy_search.png")
    lines = [
        f"### {entry.title}\n",
        "| method | achieved cost | true steps in pit | seconds |",
        "|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['cost_achieved']:.3g} | {r['true_steps_in_pit']:.1%} | {r['seconds']:.3g} |"
        )
    lines.append(
        f"\n{len(tasks)} pit tasks, T = {env.horizon}. Policy search: {OmegaConf.to_container(entry.policy_search)}, "
        f"initial states uniform in {list(entry.start_low)} … {list(entry.start_high)}, β = {entry.beta}; its "
        "seconds are training time, after which acting is one network call per step. SGP: planner_set as in "
        f"`{list(entry.plan_overrides)}`, MPC re-plans every step (planner.mpc). Train overrides: "
        f"{list(entry.train_overrides)}; seed {entry.seed}. {provenance(payload)}\n"
    )
    table = "\n".join(lines)
    write_report(out, payload, table)
    return payload
