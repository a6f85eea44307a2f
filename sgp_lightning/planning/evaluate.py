"""Build a planner from its config, plan a batch of tasks, roll the actions out on the true env, and measure.

The headline metric everywhere is cost of the plan (under the learned model) versus cost achieved (the same
actions on the true env); model_error is the mean distance between the predicted and the true states.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sgp_lightning.envs import Env, Tasks
from sgp_lightning.errors import require
from sgp_lightning.planning.mpc import MPC
from sgp_lightning.planning.optimizers import build_planner
from sgp_lightning.planning.penalties import build_penalty, check_penalty, parse_beta
from sgp_lightning.planning.problem import PlanResult, ShootingProblem, frozen
from sgp_lightning.utils import plain_config

COST_SOURCES = ("env", "learned")
DYNAMICS_SOURCES = ("model", "ensemble_mean")  # what planned rollouts follow
POLICY = "policy"  # planner.algorithm of the behaviour-cloning baseline: act with model.policy, no planning


def rollout_part(cfg: Mapping) -> str:
    """The system part a planner's rollouts follow: "ensemble" (the members' mean) with penalty=ensemble or
    dynamics=ensemble_mean, otherwise "dynamics"."""
    cfg = plain_config(cfg)
    follows_ensemble = cfg.get("penalty") == "ensemble" or cfg.get("dynamics") == "ensemble_mean"
    return "ensemble" if follows_ensemble else "dynamics"


def validate_planner_config(cfg: Mapping) -> None:
    """Fail early, before any training, on planner values that can never work."""
    cfg = plain_config(cfg)
    if cfg.get("algorithm") == POLICY:  # acts with the learned policy: nothing is planned
        unknown = set(cfg) - {"algorithm", "name"}
        require(
            not unknown,
            f"planner.algorithm=policy (behaviour cloning) takes no settings, got {sorted(unknown)}",
        )
        return
    for section in ("optimizer", "mpc"):
        require(isinstance(cfg.get(section) or {}, dict), f"planner.{section} must be a mapping of settings")
    penalty, beta = (
        cfg.get("penalty", "score"),
        check_penalty(cfg.get("penalty", "score"), cfg.get("beta", 0)),
    )
    algorithm = cfg.get("algorithm", "gradient")
    require(
        not (algorithm == "cem" and penalty == "score" and beta > 0),
        "planner.algorithm=cem cannot use the score penalty (its surrogate has a gradient but no value); "
        "use penalty=ensemble or none with CEM",
    )
    require(
        cfg.get("cost_source", "env") in COST_SOURCES, f"planner.cost_source must be one of {COST_SOURCES}"
    )
    require(
        cfg.get("action_units", "raw") in ("raw", "normalized"),
        f"planner.action_units must be raw or normalized, got {cfg.get('action_units')!r}",
    )
    require(
        cfg.get("dynamics", "model") in DYNAMICS_SOURCES,
        f"planner.dynamics must be one of {DYNAMICS_SOURCES}, got {cfg.get('dynamics')!r}",
    )
    require(
        not (cfg.get("penalty") == "ensemble" and cfg.get("dynamics") == "model"),
        "planner.penalty=ensemble always rolls out the ensemble's mean: use dynamics=ensemble_mean (or leave it unset)",
    )
    require(
        isinstance(cfg.get("normalize_actions", True), bool),
        f"planner.normalize_actions must be true or false, got {cfg.get('normalize_actions')!r}",
    )
    horizon = cfg.get("horizon")
    require(
        horizon is None or (int(horizon) == horizon and horizon > 0),
        f"planner.horizon must be > 0, got {horizon}",
    )
    mpc = cfg.get("mpc") or {}
    mpc_horizon = mpc.get("horizon", 1)
    require(
        int(mpc_horizon) == mpc_horizon and mpc_horizon > 0,
        f"planner.mpc.horizon must be > 0, got {mpc_horizon}",
    )
    unknown = set(mpc) - {"horizon", "iterations", "warm_start"}
    require(not unknown, f"unknown planner.mpc settings {sorted(unknown)}")
    build_planner(algorithm, cfg.get("optimizer"))


def validate_against_system(
    cfg: Mapping,
    has_dynamics: bool,
    has_reward: bool,
    num_levels: int | None,
    num_members: int | None = None,
    distance_levels: int | None = None,
) -> None:
    """Checks that depend on the system's parts; `num_levels` is None without a score model,
    `num_members` None without an ensemble and `distance_levels` None without a distance estimator."""
    has_ensemble = num_members is not None
    cfg = plain_config(cfg)
    if cfg.get("penalty", "score") == "distance" and parse_beta(cfg.get("beta", 0)) > 0:
        require(
            distance_levels is not None,
            "penalty=distance needs a distance estimator, but model.distance is null",
        )
        level = cfg.get("distance_level")
        require(
            level is None or 0 <= level < distance_levels,
            f"planner.distance_level must be in [0, {distance_levels - 1}] or null (the last), got {level}",
        )
    if rollout_part(cfg) == "ensemble":
        require(
            has_ensemble,
            "penalty=ensemble and dynamics=ensemble_mean need an ensemble, but model.ensemble is null",
        )
        require(
            cfg.get("ensemble_members") is None
            or num_members is None
            or 2 <= cfg["ensemble_members"] <= num_members,
            f"planner.ensemble_members must be in [2, {num_members}] (the trained ensemble's size), "
            f"got {cfg.get('ensemble_members')}",
        )
    else:
        require(has_dynamics, "planning needs a dynamics model, but model.dynamics is null")
    require(
        cfg.get("cost_source", "env") != "learned" or has_reward,
        "planner.cost_source=learned needs a reward model, but model.reward is null",
    )
    if parse_beta(cfg.get("beta", 0)) > 0 and cfg.get("penalty", "score") == "score":
        require(num_levels is not None, "planner.beta > 0 needs a score model, but model.score is null")
        start = (cfg.get("optimizer") or {}).get("start_level", 0)
        require(
            0 <= start < num_levels,
            f"planner.optimizer.start_level must be in [0, {num_levels - 1}] for the score's {num_levels} "
            f"noise levels, got {start}",
        )


def validate_for_system(cfg: Mapping, system) -> None:
    if plain_config(cfg).get("algorithm") == POLICY:
        require(
            system.policy is not None, "planner.algorithm=policy needs a BC policy, but model.policy is null"
        )
        return
    score = system.score
    validate_against_system(
        cfg,
        system.dynamics is not None,
        system.reward is not None,
        score.schedule.num_levels if score is not None else None,
        system.ensemble.num_members if system.ensemble is not None else None,
        system.distance.schedule.num_levels if system.distance is not None else None,
    )


def cost_functions(system, env: Env, cost_source: str):
    """(planning cost on model states, true cost on env states): both (states, actions, goal) -> (B,)."""
    if cost_source == "env":
        return env.cost, env.cost
    reward_model = system.require_part("reward")

    def learned_cost(states, actions, goal):
        return -reward_model(states[:, :-1], actions).sum(1)

    def true_cost(states, actions, goal):
        return -env.reward(states[:, :-1], actions).sum(1)

    return learned_cost, true_cost


def build_problem(system, env: Env, cfg: Mapping, horizon: int) -> ShootingProblem:
    """The rollout follows `rollout_part(cfg)`: the ensemble's mean or the dynamics model."""
    cfg = plain_config(cfg)
    plan_cost, _ = cost_functions(system, env, cfg.get("cost_source", "env"))
    kind, members = cfg.get("penalty", "score"), cfg.get("ensemble_members")
    penalty = build_penalty(kind, cfg.get("beta", 0), system, members, cfg.get("distance_level"))
    if rollout_part(cfg) == "ensemble":
        model = system.require_part("ensemble")
        dynamics = functools.partial(model.mean_prediction, num_members=members)
    else:
        model = dynamics = system.require_part("dynamics")
    # normalized: steps (lr, init_std, CEM std) are in units of the data's action std, as the paper's are
    scale = model.action_norm.std.detach() if cfg.get("action_units", "raw") == "normalized" else None
    # Without normalize_actions the models see the raw decision variables, which a plan can push off the
    # data (the failure mode the paper's pixel experiment shows); the true env still normalizes them.
    action_map = env.normalize_action if cfg.get("normalize_actions", True) else None
    return ShootingProblem(
        dynamics, plan_cost, penalty, horizon, env.neutral_action(), scale, action_map=action_map
    )


class TrueCostMonitor:
    """Records the true cost of the current plan every `every` planner iterations (paper Fig. 2F): the
    decision variables are mapped to actions and rolled out on the true env, outside autograd."""

    def __init__(self, problem: ShootingProblem, env: Env, tasks: Tasks, true_cost, every: int):
        require(every > 0, f"track_true_cost_every must be positive, got {every}")
        self.problem, self.env, self.tasks, self.true_cost, self.every = problem, env, tasks, true_cost, every
        self.iterations: list[int] = []
        self.costs: list[torch.Tensor] = []
        self.seconds = 0.0  # spent recording, so the planner's own time can be reported without it

    @torch.no_grad()
    def record(self, iteration: int, actions: torch.Tensor) -> None:
        start = time.perf_counter()
        states = self.env.rollout(self.tasks.x0, actions)
        self.iterations.append(iteration)
        self.costs.append(self.true_cost(states, actions, self.tasks.goal))
        self.seconds += time.perf_counter() - start

    def __call__(self, iteration: int, decision: torch.Tensor) -> None:
        if iteration % self.every == 0:
            self.record(iteration, self.problem.actions_of(decision))

    def history(self) -> dict[str, torch.Tensor]:
        return {"true_cost": torch.stack(self.costs), "true_cost_iteration": torch.tensor(self.iterations)}


@dataclass
class Evaluation:
    method: str
    plan: PlanResult
    true_states: torch.Tensor  # (B, T+1, *state_shape)
    cost_planned: torch.Tensor  # (B,)
    cost_achieved: torch.Tensor  # (B,)
    model_error: torch.Tensor  # (B,) mean over t of ‖x̂_t − x_t‖ (images: the pixel-wise L2 norm)
    seconds: float
    success: torch.Tensor | None = None  # (B,) bool: the true rollout solved the task (env.success)
    outside_data: torch.Tensor | None = None  # (B,) share of planned steps outside the data region
    time_in_trap: torch.Tensor | None = None  # (B,) share of true steps in the domain's trap (the pit)

    def summary(self) -> dict:
        per_task = [
            {"cost_planned": float(p), "cost_achieved": float(a), "model_error": float(e)}
            for p, a, e in zip(self.cost_planned, self.cost_achieved, self.model_error, strict=True)
        ]
        out = {
            "cost_planned": float(self.cost_planned.mean()),
            "cost_achieved": float(self.cost_achieved.mean()),
            "model_error": float(self.model_error.mean()),
            "seconds": self.seconds,
        }
        for key, values in (
            ("success_rate", self.success), ("outside_data", self.outside_data), ("time_in_trap", self.time_in_trap)
        ):  # fmt: skip
            if values is not None:
                out[key] = float(values.float().mean())
                for task, value in zip(per_task, values.tolist(), strict=True):
                    task[key] = float(value)
        if "true_cost" in self.plan.history:  # the convergence curve: mean true cost over the tasks
            out["convergence"] = {
                "iteration": self.plan.history["true_cost_iteration"].tolist(),
                "true_cost": self.plan.history["true_cost"].mean(1).tolist(),
            }
        return {**out, "per_task": per_task}


def plan_and_evaluate(
    system,
    env: Env,
    tasks: Tasks,
    cfg: Mapping,
    mpc: bool = False,
    method: str = "",
    track_true_cost_every: int | None = None,
) -> Evaluation:
    """Plan every task in one batch (open loop, or MPC on the true env) and evaluate on the true env.

    With `track_true_cost_every` = k (open loop only), the true cost of the plan is recorded every k
    iterations (history["true_cost"]); the time that takes is excluded from `seconds`."""
    cfg = plain_config(cfg)
    validate_planner_config(cfg)
    validate_for_system(cfg, system)
    tasks = tasks.to(system.device)
    steps = int(cfg.get("horizon") or env.horizon)
    planner = build_planner(cfg.get("algorithm", "gradient"), cfg.get("optimizer"))
    _, true_cost = cost_functions(system, env, cfg.get("cost_source", "env"))
    start, monitor = time.perf_counter(), None
    with frozen(system):
        if mpc:
            mpc_cfg = cfg.get("mpc") or {}
            problem = build_problem(system, env, cfg, int(mpc_cfg.get("horizon", steps)))
            controller = MPC(planner, mpc_cfg.get("iterations"), mpc_cfg.get("warm_start", True))
            # Its states and cost_planned are the learned model's prediction of all executed actions from x0.
            plan = controller.run(problem, env, tasks.x0, tasks.goal, steps)
        else:
            problem = build_problem(system, env, cfg, steps)
            if track_true_cost_every:
                monitor = TrueCostMonitor(problem, env, tasks, true_cost, int(track_true_cost_every))
            plan = planner.solve(problem, tasks.x0, tasks.goal, monitor=monitor)
            if monitor is not None:
                monitor.record(planner.iterations, plan.actions)  # the returned plan, after the last step
                plan.history.update(monitor.history())
    seconds = time.perf_counter() - start - (monitor.seconds if monitor is not None else 0.0)
    if mpc:  # the states MPC met on the true env (a stochastic env would not repeat them)
        true_states = plan.history["true_states"]
    else:
        with torch.no_grad():
            true_states = env.rollout(tasks.x0, plan.actions)
    return measure(
        method or cfg.get("name", "planner"), plan, true_states, env, tasks.goal, true_cost, seconds
    )


@torch.no_grad()
def measure(method: str, plan: PlanResult, true_states: torch.Tensor, env: Env, goal: torch.Tensor, true_cost,
            seconds: float) -> Evaluation:  # fmt: skip
    """The evaluation of a plan (its actions and the learned model's states) against the true states that
    the same actions, or the same policy, produced: achieved cost, model error and the domain's metrics."""
    outside = env.outside_data(plan.states, plan.actions)
    return Evaluation(
        method,
        plan,
        true_states,
        plan.cost_planned,
        true_cost(true_states, plan.actions, goal),
        (plan.states[:, 1:] - true_states[:, 1:]).flatten(2).norm(dim=-1).mean(1),
        seconds,
        env.success(true_states, goal),
        None if outside is None else outside.float().mean(1),
        env.time_in_trap(true_states),
    )
