"""SGPSystem: the dynamics, ensemble, reward and score models of one domain, trained together and planned with.

Each part is built from plain config values (a dict of its constructor arguments) so a checkpoint rebuilds
from its hyperparameters alone. A part can be switched off (`None`) or loaded frozen from another
checkpoint (`frozen={"score": "path/to/last.ckpt"}`), e.g. to reuse one score model across β sweeps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import hydra
import lightning as L
import torch

from sgp_lightning.envs import Env
from sgp_lightning.errors import SGPError, require
from sgp_lightning.models.base import Batch, OptimizerFactory, default_optimizer, validation_generator
from sgp_lightning.models.distance import DistanceEstimator
from sgp_lightning.models.dynamics import DynamicsModel
from sgp_lightning.models.ensemble import EnsembleDynamicsModel
from sgp_lightning.models.policy import PolicyModel
from sgp_lightning.models.reward import RewardModel
from sgp_lightning.models.score import ScoreModel
from sgp_lightning.utils import plain_config

PARTS = {
    "dynamics": DynamicsModel,
    "ensemble": EnsembleDynamicsModel,  # the ensemble baselines' dynamics (and their variance penalty)
    "reward": RewardModel,
    "score": ScoreModel,
    "distance": DistanceEstimator,  # the smoothed distance to data as a value (CEM's distance penalty, C.1)
    "policy": PolicyModel,  # behaviour cloning, a baseline that acts without planning
}


LR_SCHEDULES = ("constant", "cosine")


class SGPSystem(L.LightningModule):
    def __init__(
        self,
        domain: str,
        state_shape: int | list[int],
        action_shape: int | list[int],
        env: Mapping,
        dynamics: Mapping | None = None,
        reward: Mapping | None = None,
        score: Mapping | None = None,
        ensemble: Mapping | None = None,
        distance: Mapping | None = None,
        policy: Mapping | None = None,
        frozen: Mapping[str, str] | None = None,
        optimizer: OptimizerFactory | Mapping | None = None,
        lr_schedule: str = "constant",
        part_lr: Mapping[str, float] | None = None,
        planner_set: str = "default",
    ):
        """Shapes are [n] for vectors or [C, H, W] for images. `optimizer` is a factory taking `params`, or
        its Hydra config (`_partial_: true`), which is saved. `lr_schedule`: constant, or cosine (the
        learning rate decays to 0 over the run's optimiser steps). `part_lr` (part → learning rate) gives
        some parts their own learning rate instead of the optimizer's, e.g. small dynamics MLPs that
        tolerate a larger one than a wide score network. `planner_set` names the experiment's planner
        settings (conf/planner_set/), which plan.py and the Controller use by default."""
        super().__init__()
        env, dynamics, reward, score, ensemble, distance, policy, state_shape, action_shape = (
            plain_config(c)
            for c in (env, dynamics, reward, score, ensemble, distance, policy, state_shape, action_shape)
        )
        frozen = dict(plain_config(frozen) or {})
        part_lr = dict(plain_config(part_lr) or {})  # plain before save_hyperparameters (safe to unpickle)
        require(
            lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}"
        )
        self.lr_schedule = lr_schedule
        self.part_lr = {name: float(lr) for name, lr in part_lr.items()}
        for part, lr in self.part_lr.items():
            require(part in PARTS, f"part_lr names unknown part {part!r}; parts are {sorted(PARTS)}")
            require(lr > 0, f"part_lr.{part} must be positive, got {lr}")
        for part in frozen:
            require(part in PARTS, f"frozen names unknown part {part!r}; parts are {sorted(PARTS)}")
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        if isinstance(optimizer, Mapping):
            self.hparams["optimizer"] = plain_config(optimizer)
            optimizer = hydra.utils.instantiate(optimizer)
        self.optimizer_factory = optimizer or default_optimizer()
        self.domain, self.planner_set = domain, str(planner_set)
        configs = {
            "dynamics": dynamics, "ensemble": ensemble, "reward": reward, "score": score, "distance": distance,
            "policy": policy
        }  # fmt: skip
        for name, cls in PARTS.items():
            config = configs[name]
            setattr(self, name, None if config is None else cls(state_shape, action_shape, **config))
        for part in frozen:
            require(getattr(self, part) is not None, f"part {part!r} is frozen but switched off (null)")
        for part in self.part_lr:
            require(
                getattr(self, part) is not None and part not in frozen,
                f"part_lr.{part} is set, but the {part} part is not trained (switched off or frozen)",
            )
        self._frozen_loaded = False

    # ---------------------------------------------------------------- composition
    @property
    def parts(self) -> dict[str, torch.nn.Module]:
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    @property
    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        return {name: part for name, part in self.parts.items() if name not in self.hparams.frozen}

    def make_env(self) -> Env:
        return hydra.utils.instantiate(self.hparams.env, _convert_="all")

    def require_part(self, name: str):
        part = getattr(self, name)
        if part is None:
            raise SGPError(f"this checkpoint has no {name} model (model.{name} was null when it was trained)")
        return part

    def load_frozen_parts(self) -> None:
        """Load each frozen part's weights from its checkpoint and stop its gradients."""
        for name, path in self.hparams.frozen.items():
            other = load_system(path)
            require(
                other.domain == self.domain,
                f"frozen {name} comes from a {other.domain!r} checkpoint but this system is {self.domain!r}",
            )
            source, target = other.require_part(name).state_dict(), getattr(self, name)
            # Configuration kept as buffers (the noise levels) must agree, or logged σ would be wrong.
            for key, value in target.state_dict().items():
                if key.endswith("sigmas") and key in source:
                    require(
                        value.shape == source[key].shape and torch.allclose(value, source[key]),
                        f"frozen {name} from {path} was trained with σ levels {_head(source[key])}, but "
                        f"model.{name} configures {_head(value)}; use the same schedule",
                    )
            try:
                target.load_state_dict(source)
            except RuntimeError as err:
                raise SGPError(f"frozen {name} from {path} does not fit model.{name}: {err}") from err
            target.requires_grad_(False)
        self._frozen_loaded = True

    # ---------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if not self._frozen_loaded:
            self.load_frozen_parts()
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            for part in self.trainable_parts.values():
                part.set_data(datamodule)

    def _losses(self, batch: Batch, generator=None) -> dict[str, torch.Tensor]:
        return {name: part.loss(batch, generator) for name, part in self.trainable_parts.items()}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        require(len(losses) > 0, "nothing to train: every part is switched off or frozen")
        for name, value in losses.items():
            self.log(f"train/{name}_loss", value)
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses = self._losses(batch, validation_generator(self.device, batch_idx))
        for name, value in losses.items():
            self.log(f"val/{name}_loss", value, sync_dist=True)
        if losses:
            self.log("val/loss", sum(losses.values()), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        # One optimizer over independent parameter sets: for Adam this equals one optimizer per part.
        trainable = {
            name: [p for p in part.parameters() if p.requires_grad]
            for name, part in self.trainable_parts.items()
        }
        if self.part_lr:
            params = [{"params": trainable[name], "lr": self.part_lr[name]} for name in self.part_lr]
            params.append(
                {"params": [p for name, ps in trainable.items() if name not in self.part_lr for p in ps]}
            )
            params = [group for group in params if group["params"]]
        else:  # one group, as checkpoints from before part_lr have (so they still resume)
            params = [p for ps in trainable.values() for p in ps]
        optimizer = self.optimizer_factory(params=params)
        if self.lr_schedule == "constant":
            return optimizer
        steps = self.trainer.estimated_stepping_batches
        require(
            math.isfinite(steps) and steps > 0,
            "lr_schedule=cosine needs a finite run: set trainer.max_epochs or trainer.max_steps",
        )
        # A lambda, not CosineAnnealingLR: its length comes from this run's trainer on every start, so a
        # run resumed with more epochs stretches the curve instead of climbing back up past the old end.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(_cosine_factor, steps=int(steps))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _cosine_factor(step: int, steps: int) -> float:
    """Cosine decay of the learning rate from 1× at step 0 to 0 at `steps`, then 0."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def _head(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values.tolist()[:3]) + (", …]" if values.numel() > 3 else "]")


def read_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """An SGPSystem checkpoint's contents on any device, with a clear error for files that are not one."""
    import os

    require(os.path.isfile(path), f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise SGPError(f"cannot read checkpoint {path}: {err}") from err
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    require(
        "domain" in hparams and "state_dict" in checkpoint,
        f"{path} is not an sgp-lightning SGPSystem checkpoint (no domain in its hyperparameters)",
    )
    return checkpoint


def load_system(path: str, map_location: str | torch.device = "cpu") -> SGPSystem:
    """Load an SGPSystem checkpoint on any device."""
    checkpoint = read_checkpoint(path, map_location)
    hparams = {
        **checkpoint["hyper_parameters"],
        "frozen": {},
    }  # frozen weights are already inside the checkpoint
    for old, new in (("state_dim", "state_shape"), ("action_dim", "action_shape")):
        if old in hparams:  # checkpoints written before image domains named vector sizes *_dim
            hparams[new] = [int(hparams.pop(old))]
    system = SGPSystem(**hparams)
    system.load_state_dict(checkpoint["state_dict"])
    system.hparams.frozen = checkpoint["hyper_parameters"].get("frozen", {})
    system._frozen_loaded = True
    return system.eval()
