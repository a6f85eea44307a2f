"""Shared fixtures: small configs composed from the real conf/, one torch thread, tmp output dirs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

torch.set_num_threads(1)  # small MLPs: 1 thread beats 2 contended ones by far

# One quiet epoch: what every shrunken run in the tests shares.
ONE_EPOCH = [
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]

# Shrinks a real run to seconds: few samples, one epoch, few planner iterations.
TINY = [
    "domain.datamodule.num_samples=1500",
    "domain.datamodule.batch_size=256",
    "domain.env.num_tasks=3",
    "domain.env.horizon=8",
    "model.dynamics.hidden_dims=[32,32]",
    "model.reward.hidden_dims=[32,32]",
    "model.score.hidden_dims=[32,32]",
    "planner.optimizer.iterations=10",
    *ONE_EPOCH,
    "callbacks.planning.every_n_epochs=1",
    "callbacks.score_field.every_n_epochs=1",
    "callbacks.score_field.grid_size=5",
    "callbacks.score_field.max_data=500",
]


@contextmanager
def hydra_conf():
    """A fresh Hydra context on the project's conf/ (for compose, and for code that composes itself)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def compose_config(config_name: str, overrides: list[str], output_dir: Path):
    with hydra_conf():
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if config_name != "train":
            cfg.output_dir = str(output_dir)
        cfg.pop("hydra", None)
    return cfg


@pytest.fixture
def train_cfg(tmp_path):
    return compose_config("train", list(TINY), tmp_path / "run")


@contextmanager
def raises_user_error(match: str):
    """Like pytest.raises(SGPError, match=...), also when Hydra or Lightning re-raised the SGPError wrapped
    (the CLI prints the same SGPError as its one `error:` line)."""
    from sgp_lightning.utils import _find_user_error

    with pytest.raises(Exception) as info:  # noqa: PT011 - the SGPError is found in the chain below
        yield
    error = _find_user_error(info.value)
    assert error is not None, f"no SGPError behind {info.value!r}"
    assert re.search(match, str(error)), f"{str(error)!r} does not match {match!r}"


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a top-level script the way a user does; returns the finished process (never raises)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def hydra_list(items: list[str]) -> str:
    """Overrides as one Hydra list value (each item quoted), e.g. for reproduce.train_overrides=."""
    return "[" + ",".join(f"'{item}'" for item in items) + "]"
