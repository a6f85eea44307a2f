"""plan(cfg): load a checkpoint, plan its domain's tasks with each method, evaluate on the true env."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sgp_lightning.errors import SGPError, require
from sgp_lightning.models import SGPSystem, read_hparams
from sgp_lightning.planning import Planner, make_planner, plan_and_evaluate
from sgp_lightning.planning.config import compose
from sgp_lightning.report import episodes_table, methods_table
from sgp_lightning.utils import set_threads, write_json

FROM_CHECKPOINT = "checkpoint"  # plan.yaml's default planner_set: the one the checkpoint recorded


def compose_plan_config(overrides: list[str]) -> DictConfig:
    """conf/plan.yaml with `overrides`; the default planner_set (checkpoint) becomes the set recorded in
    the checkpoint at training, so its planners plan with the experiment's tuned settings. Overrides of
    planner settings (e.g. planners.sgp.beta=3) still come last."""
    cfg = compose("plan", overrides)
    select_methods(cfg)  # an unknown method is reported before the checkpoint is read
    if cfg.planner_set == FROM_CHECKPOINT:
        recorded = read_hparams(cfg.ckpt_path).get("planner_set", "default")
        cfg = compose("plan", [*overrides, f"planner_set={recorded}"])
    return cfg


def select_methods(cfg: DictConfig) -> dict[str, dict]:
    """The configs of the planners named in `methods`, in order (method name → plain config)."""
    planners = OmegaConf.to_container(cfg.planners, resolve=True)
    methods = list(cfg.methods)
    require(len(methods) > 0, "methods is empty: name at least one planner, e.g. methods=[sgp,vanilla]")
    unknown = [m for m in methods if m not in planners]
    require(not unknown, f"unknown planner(s) {unknown} in methods; available: {sorted(planners)}")
    return {name: planners[name] for name in methods}


def build_planners(methods: dict[str, dict], system) -> dict[str, Planner]:
    """Each method's planner, named by its method key and checked against the system."""
    planners = {name: make_planner({**config, "name": name}) for name, config in methods.items()}
    for planner in planners.values():
        planner.check(system)
    return planners


def resolve_device(name: str) -> torch.device:
    """auto: the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SGPError(f"device must be auto, cpu or cuda[:N], got {name!r}") from err
    require(device.type != "cuda" or torch.cuda.is_available(), f"device={name} but no GPU is available")
    return device


def plan(cfg: DictConfig) -> dict:
    """Returns the results payload that is also written to output_dir/results.json. `cfg` is plan.yaml
    composed by `compose_plan_config` (or with an explicit planner_set)."""
    set_threads(cfg.get("num_threads"))
    methods = select_methods(cfg)
    system = SGPSystem.load_from_checkpoint(cfg.ckpt_path).to(resolve_device(cfg.get("device", "cpu")))
    if cfg.get("expected_domain"):
        require(
            cfg.expected_domain == system.domain,
            f"{cfg.ckpt_path} is a checkpoint of domain {system.domain!r}, but expected_domain="
            f"{cfg.expected_domain} was asked for",
        )
    require(
        cfg.get("planner_set") != FROM_CHECKPOINT or system.planner_set == "default",
        f"{cfg.ckpt_path} records planner_set={system.planner_set}: compose the config with "
        "sgp_lightning.plan.compose_plan_config (as plan.py does) or pass planner_set=NAME",
    )
    planners = build_planners(methods, system)
    env = system.make_env()
    if getattr(env, "episodic", False):
        return _plan_episodes(cfg, system, env, methods, planners)
    if cfg.get("num_tasks") is not None:
        require(int(cfg.num_tasks) > 0, f"num_tasks must be positive, got {cfg.num_tasks}")
        require(hasattr(env, "num_tasks"), f"domain {system.domain!r} has a fixed task set (no num_tasks)")
        env.num_tasks = int(cfg.num_tasks)
    if cfg.get("task_seed") is not None:  # a fresh task set, e.g. to check settings tuned on the default one
        require(hasattr(env, "task_seed"), f"domain {system.domain!r} has a fixed task set (no task_seed)")
        env.task_seed = int(cfg.task_seed)
    tasks = env.tasks()

    evaluations = []
    for name, planner in planners.items():
        torch.manual_seed(cfg.get("seed") or 0)
        evaluations.append(
            plan_and_evaluate(
                system, env, tasks, planner, mpc=bool(cfg.mpc), method=name,
                track_true_cost_every=cfg.get("track_true_cost_every"),
            )
        )  # fmt: skip

    payload = {
        "domain": system.domain,
        "checkpoint": str(cfg.ckpt_path),
        "mpc": bool(cfg.mpc),
        "num_tasks": len(tasks),
        "methods": {ev.method: {**ev.summary(), "planner": methods[ev.method]} for ev in evaluations},
    }
    out = Path(cfg.output_dir)
    write_json(out / "results.json", payload)
    if env.state_dim >= 2:
        from sgp_lightning.plotting import plot_image_rollouts, plot_plans, save_figure

        save_figure(plot_plans(env, evaluations), out / "plan.png")
        if env.image_shape is not None:
            save_figure(plot_image_rollouts(evaluations), out / "image_rollouts.png")
    if any("true_cost" in ev.plan.history for ev in evaluations):
        from sgp_lightning.plotting import plot_convergence, save_figure

        save_figure(plot_convergence(payload["methods"]), out / "convergence.png")
    table = methods_table(payload["methods"])
    (out / "table.md").write_text(table + "\n")
    print(
        f"\n{system.domain}: {len(tasks)} tasks, {'MPC' if cfg.mpc else 'open loop'} ({cfg.ckpt_path})\n{table}\n"
    )
    print(f"wrote {out / 'results.json'}")
    return payload


def _plan_episodes(
    cfg: DictConfig, system, env, methods: dict[str, dict], planners: dict[str, Planner]
) -> dict:
    """Episodic domains (D4RL): each method controls the same seeded episodes (MPC, or the BC policy)."""
    from sgp_lightning.planning.episodes import run_episodes

    if cfg.get("num_tasks") is not None:
        require(int(cfg.num_tasks) > 0, f"num_tasks (episodes) must be positive, got {cfg.num_tasks}")
    if cfg.get("episode_steps") is not None:
        require(int(cfg.episode_steps) > 0, f"episode_steps must be positive, got {cfg.episode_steps}")
    evaluations = []
    for name, planner in planners.items():
        torch.manual_seed(cfg.get("seed") or 0)
        evaluations.append(
            run_episodes(system, env, planner, method=name, num_episodes=cfg.get("num_tasks"),
                         max_steps=cfg.get("episode_steps"))
        )  # fmt: skip
    payload = {
        "domain": system.domain,
        "checkpoint": str(cfg.ckpt_path),
        "env": env.task.gym_id,
        "num_episodes": len(evaluations[0].returns),
        "episode_steps": int(cfg.get("episode_steps") or env.episode_steps),
        "methods": {ev.method: {**ev.summary(), "planner": methods[ev.method]} for ev in evaluations},
    }
    out = Path(cfg.output_dir)
    write_json(out / "results.json", payload)
    table = episodes_table(payload["methods"])
    (out / "table.md").write_text(table + "\n")
    print(
        f"\n{system.domain} ({env.task.gym_id}, D4RL-normalised): {payload['num_episodes']} episodes "
        f"({cfg.ckpt_path})\n{table}\n"
    )
    print(f"wrote {out / 'results.json'}")
    return payload
