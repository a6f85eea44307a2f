"""Every shipped config composes and resolves: each experiment with train.yaml, each planner_set with
plan.yaml, and each generic reproduce entry with the train and plan overrides it passes on, its tuning
section checked as reproduce.py checks it. The paper-scale configs cannot be run in the test budget, so
this is what keeps them from rotting."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from sgp_lightning.planning import make_planner
from sgp_lightning.reproduce import _check_tune
from tests.conftest import CONF, compose_config, hydra_conf

EXPERIMENTS = sorted(
    str(p.relative_to(CONF / "experiment").with_suffix(""))
    for p in (CONF / "experiment").rglob("*.yaml")
    if not p.name.startswith("_")
)
PLANNER_SETS = sorted(p.stem for p in (CONF / "planner_set").glob("*.yaml"))
ENTRIES = sorted(p.stem for p in (CONF / "reproduce").glob("*.yaml") if not p.name.startswith("_"))


def _resolved(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def test_every_config_group_is_listed():
    assert "cartpole" in EXPERIMENTS and "d4rl/hopper_medium" in EXPERIMENTS
    assert "cartpole_small" in PLANNER_SETS and "cartpole" in ENTRIES


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(experiment, tmp_path: Path):
    cfg = _resolved(compose_config("train", [f"experiment={experiment}"], tmp_path))
    assert cfg["domain"]["name"] and cfg["trainer"]["max_epochs"] != 0
    assert float(cfg["planner"]["beta"]) >= 0  # "inf" = data landing
    make_planner(cfg["planner"])  # the validation planner builds with the experiment's planner set


@pytest.mark.parametrize("planner_set", PLANNER_SETS)
def test_planner_set_composes_and_resolves(planner_set, tmp_path: Path):
    known = set(compose_config("plan", ["ckpt_path=unused"], tmp_path).planners)
    planners = _resolved(
        compose_config("plan", [f"planner_set={planner_set}", "ckpt_path=unused"], tmp_path)
    )["planners"]
    assert set(planners) == known, f"planner_set={planner_set} sets unknown planners {set(planners) - known}"
    for config in planners.values():  # each one builds: its settings are valid for its planner class
        make_planner(config)
    tuned = {p.stem for p in (CONF / "planner_set" / planner_set).glob("*.yaml")}
    assert tuned <= known, f"planner_set/{planner_set}/ has files for unknown planners {tuned - known}"


@pytest.mark.parametrize("entry", ENTRIES)
def test_reproduce_entry_composes_with_its_overrides(entry, tmp_path: Path):
    cfg = compose_config("reproduce", [f"reproduce={entry}"], tmp_path).reproduce
    assert cfg.name == entry, f"conf/reproduce/{entry}.yaml names itself {cfg.name!r}"
    if cfg.get("pipeline") is None:  # generic entries: a train config per dataset (or one), one plan config
        for dataset in cfg.get("datasets") or [None]:
            # the data step's overrides (D4RL: the dataset's experiment; its file path is only known at run time)
            data = [f"experiment=d4rl/{cfg.env}_{dataset}"] if dataset else []
            _resolved(compose_config("train", [*cfg.train_overrides, *data], tmp_path))
        plan_cfg = compose_config("plan", [*cfg.plan_overrides, "ckpt_path=unused"], tmp_path)
        missing = [m for m in cfg.methods if m not in plan_cfg.planners]
        assert not missing, f"{entry}: methods {missing} have no planner"
        _resolved(plan_cfg)
        if cfg.get("tune"):
            with hydra_conf():  # _check_tune composes the plan config itself
                grids = _check_tune(cfg)
            assert set(grids) == set(cfg.tune.methods)
        # the entry's data step and table resolve to real objects
        if cfg.get("data") is not None:
            assert callable(hydra.utils.instantiate(cfg.data))
        if cfg.get("table") is not None:
            table = hydra.utils.instantiate(cfg.table)
            assert callable(table.summarize) and callable(table.markdown)


@pytest.mark.parametrize("logger", sorted(p.stem for p in (CONF / "logger").glob("*.yaml")))
def test_every_logger_config_composes(logger, tmp_path: Path):
    """logger=csv | tensorboard | none | wandb | mlflow: each composes to Lightning loggers (wandb and mlflow
    are optional packages, so they are composed here, not instantiated)."""
    cfg = _resolved(compose_config("train", [f"logger={logger}"], tmp_path))
    targets = [c["_target_"] for c in (cfg.get("logger") or {}).values()]
    assert all(t.startswith("lightning.pytorch.loggers.") for t in targets)
    assert (logger == "none") == (not targets)


def _plan_override(overrides, key: str):
    """The value a `key=value` plan override sets (the last one wins), or None."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    return int(values[-1]) if values else None


@pytest.mark.parametrize("entry", ENTRIES)
def test_tuning_never_sees_the_tables_tasks_or_seeds(entry, tmp_path: Path):
    """The tuning protocol (docs/results.md): an entry that chooses a setting does so on tasks (or episode
    seeds) and, where it trains for tuning, a training seed that its table does not report."""
    cfg = compose_config("reproduce", [f"reproduce={entry}"], tmp_path).reproduce
    tune_seed = cfg.tune.task_seed if cfg.get("tune") else cfg.get("tuning_task_seed")
    if tune_seed is None or (cfg.get("tune") is None and cfg.get("beta_sweep") is None):
        return  # nothing is tuned
    for dataset in cfg.get("datasets") or [None]:
        data = [f"experiment=d4rl/{cfg.env}_{dataset}"] if dataset else []
        env = compose_config("train", [*cfg.train_overrides, *data], tmp_path).domain.env
        table_seed = _plan_override(cfg.plan_overrides, "task_seed")
        if "episode_seed" in env:  # episodic: the tuning episodes' seeds must not be the table's
            count = _plan_override(cfg.plan_overrides, "num_tasks") or env.num_episodes
            table = set(range(table_seed or env.episode_seed, (table_seed or env.episode_seed) + count))
            assert not table & set(range(tune_seed, tune_seed + count)), (
                f"{entry}: tuning episodes are the table's"
            )
        else:
            assert tune_seed != (table_seed if table_seed is not None else env.task_seed), entry
    if cfg.get("tune") and cfg.tune.get("train_seed") is not None:
        assert cfg.tune.train_seed not in cfg.seeds, f"{entry}: tunes on a training seed its table reports"
