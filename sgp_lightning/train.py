"""train(cfg): compose → instantiate env, datamodule, system, callbacks, loggers → fit → metrics.json."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from sgp_lightning.envs import Env
from sgp_lightning.errors import SGPError, require
from sgp_lightning.models import read_hparams
from sgp_lightning.planning import parse_beta
from sgp_lightning.schedules import NoiseSchedule
from sgp_lightning.utils import log, set_threads, write_json

# Lightning-internal deprecation noise that a user cannot act on.
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")

HPARAM_KEYS = {
    "domain": "domain.name",
    "beta": "planner.beta",
    "sigma_max": "domain.sigma_max",
    "sigma_min": "domain.sigma_min",
    "num_levels": "domain.num_levels",
    "schedule": "domain.schedule",
    "num_samples": "domain.datamodule.num_samples",
    "planner_iterations": "planner.optimizer.iterations",
    "planner_lr": "planner.optimizer.lr",
    "seed": "seed",
}
PLAN_METRICS = ("plan/cost_planned", "plan/cost_achieved", "plan/model_error")


def validate_config(cfg: DictConfig) -> None:
    """Reject values that can never work before any data is generated or any epoch is trained. (The
    planner checks itself: its settings when the PlanningCallback builds it, the system's parts when
    fitting starts.)"""
    NoiseSchedule.build(
        cfg.domain.schedule, cfg.domain.sigma_max, cfg.domain.sigma_min, cfg.domain.num_levels
    )
    require(
        cfg.domain.env.get("horizon", 1) > 0, f"domain.env.horizon must be > 0, got {cfg.domain.env.horizon}"
    )
    if cfg.get("ckpt_path") is not None:
        domain = read_hparams(cfg.ckpt_path)["domain"]
        require(
            domain == cfg.domain.name,
            f"cannot resume: {cfg.ckpt_path} is a checkpoint of domain {domain!r}, this run is {cfg.domain.name!r}",
        )


def run_hparams(cfg: DictConfig) -> dict:
    """The values a sweep varies, flat, for TensorBoard's HParams view and metrics.json."""
    values = {}
    for name, key in HPARAM_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if name == "beta" and value is not None:
            value = parse_beta(value)
            value = "inf" if math.isinf(value) else value
        values[name] = value
    return values


def instantiate_env_and_data(cfg: DictConfig):
    """The domain's env and datamodule of a train config; the datamodule normalizes as `cfg.normalization`
    says (zscore when the config predates the key)."""
    env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
    normalization = cfg.get("normalization") or "zscore"
    datamodule = hydra.utils.instantiate(
        cfg.domain.datamodule, env=env, normalization=normalization, _convert_="all"
    )
    return env, datamodule


def instantiate_system(cfg: DictConfig, env: Env):
    """The SGPSystem of `cfg.model`, with its state and action shapes taken from the instantiated env (the
    one place a domain writes them). Every value reaches the system as plain Python (`_convert_="all"`), so
    its saved hyperparameters load weights-only."""
    system = hydra.utils.instantiate(
        cfg.model,
        state_shape=list(env.state_shape),
        action_shape=list(env.action_shape),
        env=env.saved_config(OmegaConf.to_container(cfg.model.env, resolve=True)),
        _convert_="all",
    )
    require(system.domain == env.name, f"model.domain {system.domain!r} != domain.env.name {env.name!r}")
    return system


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Train an SGPSystem; return (metrics, objects). Metrics include the last plan/* values."""
    set_threads(cfg.get("num_threads"))
    validate_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info(f"Domain {cfg.domain.name}: building env and datamodule")
    env, datamodule = instantiate_env_and_data(cfg)
    system = instantiate_system(cfg, env)

    callbacks = [
        hydra.utils.instantiate(c, _convert_="all")
        for c in (cfg.get("callbacks") or {}).values()
        if c is not None
    ]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    hparams = run_hparams(cfg)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # Registering plan/* as HParams metrics lets TensorBoard compare a sweep's runs side by side.
            logger.log_hyperparams(hparams, {name: math.nan for name in PLAN_METRICS})
        else:
            logger.log_hyperparams(hparams)
    if trainer.is_global_zero:
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, Path(cfg.paths.output_dir) / "config.yaml", resolve=False)

    trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / "metrics.json", {"hparams": hparams, "metrics": metrics})
        print(run_summary(Path(cfg.paths.output_dir), trainer, metrics))
    return metrics, {"cfg": cfg, "env": env, "datamodule": datamodule, "system": system, "trainer": trainer}


def last_checkpoint(output_dir: str | Path) -> Path:
    """A run folder's checkpoints/last.ckpt: the state after its latest epoch (conf/callbacks/default.yaml's
    `last_checkpoint`), which `ckpt_path=` resumes and plan.py and reproduce plan."""
    return Path(output_dir) / "checkpoints" / "last.ckpt"


def run_summary(output_dir: Path, trainer: L.Trainer, metrics: dict) -> str:
    """What a finished run left and how to look at it: folder, checkpoint, TensorBoard, final plan/* metrics."""
    lines = [f"\nRun finished: {output_dir}"]
    last = last_checkpoint(output_dir)
    if last.is_file():
        lines.append(f"  checkpoint:  {last}  (python plan.py ckpt_path=…)")
    if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
        lines.append(f"  TensorBoard: tensorboard --logdir {output_dir}")
    plan_metrics = {k: v for k, v in metrics.items() if k.startswith("plan/")}
    if plan_metrics:
        lines.append("  " + "   ".join(f"{k} {v:.4g}" for k, v in sorted(plan_metrics.items())))
    lines.append(f"  metrics:     {output_dir / 'metrics.json'}")
    return "\n".join(lines)


def optimized_metric(cfg: DictConfig, metrics: dict) -> float | None:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise SGPError(f"optimized_metric {name!r} was not logged; logged metrics are {sorted(metrics)}")
    return metrics[name]
