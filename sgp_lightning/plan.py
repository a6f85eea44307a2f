"""plan(cfg): load a checkpoint, plan its domain's tasks with each method, evaluate on the true env."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sgp_lightning.errors import SGPError, require
from sgp_lightning.models import SGPSystem, read_hparams
from sgp_lightning.planning import Planner, make_planner, parse_beta
from sgp_lightning.planning.config import compose
from sgp_lightning.planning.evaluators import write_results
from sgp_lightning.utils import set_threads

FROM_CHECKPOINT = "checkpoint"  # plan.yaml's default planner_set: the one the checkpoint recorded
# plan.yaml's evaluation options, each passed to the domain's evaluator where it applies
PLAN_OPTIONS = (
    "mpc",
    "num_tasks",
    "task_seed",
    "episode_steps",
    "track_true_cost_every",
    "progress",
    "video",
    "stack_methods",
    "stack_episodes",
)


def compose_plan_config(overrides: list[str], hparams: dict | None = None) -> DictConfig:
    """conf/plan.yaml with `overrides`; the default planner_set (checkpoint) becomes the set recorded in
    the checkpoint at training, so its planners plan with the experiment's tuned settings. Overrides of
    planner settings (e.g. planners.sgp.beta=3) still come last. `hparams`: what the checkpoint records,
    where it is known before the checkpoint exists (reproduce, from the training's config)."""
    cfg = compose("plan", overrides)
    select_methods(cfg)  # an unknown method is reported before the checkpoint is read
    if cfg.planner_set == FROM_CHECKPOINT:
        recorded = (read_hparams(cfg.ckpt_path) if hparams is None else hparams).get("planner_set", "default")
        cfg = compose("plan", [*overrides, f"planner_set={recorded}"])
    return cfg


def select_methods(cfg: DictConfig) -> dict[str, dict]:
    """The configs of the planners named in `methods`, in order (method name → plain config); with `betas`,
    each method at each β instead (`beta_label(method, β)` → its config at that β)."""
    planners = OmegaConf.to_container(cfg.planners, resolve=True)
    methods = list(cfg.methods)
    require(len(methods) > 0, "methods is empty: name at least one planner, e.g. methods=[sgp,vanilla]")
    unknown = [m for m in methods if m not in planners]
    require(not unknown, f"unknown planner(s) {unknown} in methods; available: {sorted(planners)}")
    if cfg.get("betas") is None:
        return {name: planners[name] for name in methods}
    betas = [parse_beta(b) for b in cfg.betas]
    require(len(betas) > 0, "betas is empty: give at least one β, or null to plan each method's own")
    labels = [beta_label("", b) for b in betas]
    require(len(set(labels)) == len(labels), f"betas repeats a value: {list(cfg.betas)}")
    return {beta_label(name, b): {**planners[name], "beta": b} for name in methods for b in betas}


def beta_label(method: str, beta: float) -> str:
    """The results label of `method` planned at β (plan.py betas=[…]), e.g. sgp@beta=0.3."""
    return f"{method}@beta={parse_beta(beta):g}"


def build_planners(methods: dict[str, dict], system) -> dict[str, Planner]:
    """Each method's planner, named by its method key and checked against the system."""
    planners = {name: make_planner({**config, "name": name}) for name, config in methods.items()}
    for planner in planners.values():
        planner.check(system)
    return planners


def plan_evaluator(cfg: DictConfig, evaluator_config: dict | None):
    """The evaluator plan(cfg) runs: the domain's (`evaluator_config`, as the checkpoint recorded it) with
    plan.yaml's options (`PLAN_OPTIONS`) from `cfg`."""
    from sgp_lightning.planning.evaluators import make_evaluator

    return make_evaluator(evaluator_config, plan_options={key: cfg.get(key) for key in PLAN_OPTIONS})


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
    evaluator = plan_evaluator(cfg, system.hparams.get("evaluator"))
    evaluations = evaluator.evaluate_all(system, env, planners, seed=cfg.get("seed") or 0)
    payload = {
        "domain": system.domain,
        "checkpoint": str(cfg.ckpt_path),
        **evaluator.describe(env, evaluations),
        "methods": {ev.method: {**ev.summary(), "planner": methods[ev.method]} for ev in evaluations},
    }
    out = Path(cfg.output_dir)
    table = write_results(out, payload, evaluator, env, evaluations)
    print(f"\n{evaluator.headline(system, env, evaluations)} ({cfg.ckpt_path})\n{table}\n")
    print(f"wrote {out / 'results.json'}")
    every_task_failed = [
        name
        for name, m in payload["methods"].items()
        if len(m.get("failed_tasks", [])) == len(m.get("per_task", [None]))
    ]
    require(
        not every_task_failed,
        f"every task's plan became non-finite with {every_task_failed} (see failed_tasks in {out / 'results.json'})",
    )
    return payload
