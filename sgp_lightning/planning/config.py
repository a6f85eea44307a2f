"""Planner configs from conf/: one planner's settings in a planner set, for code that runs outside Hydra."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import OmegaConf

from sgp_lightning.errors import require

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(config_name: str, overrides: list[str]):
    """Compose conf/<config_name>.yaml with overrides, inside a running Hydra app or on its own."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def planner_config(name: str, planner_set: str = "default", overrides: Mapping | None = None) -> dict:
    """The config of planner `name` (a conf/planner/ entry) with planner set `planner_set`'s settings and
    then `overrides` (nested mappings merge, e.g. {"optimizer": {"iterations": 20}})."""
    planners = compose("plan", [f"planner_set={planner_set}", "ckpt_path=unused"]).planners
    require(name in planners, f"unknown planner {name!r}; available: {sorted(planners)}")
    config = OmegaConf.merge(planners[name], dict(overrides or {}))
    return OmegaConf.to_container(config, resolve=True)
