"""SGPSystem: the dynamics, ensemble, reward and score models of one domain, trained together and planned with.

Each part is built from plain config values (a dict of its constructor arguments) so a checkpoint rebuilds
from its hyperparameters alone. A part can be switched off (`None`) or loaded frozen from another
checkpoint (`frozen={"score": "path/to/last.ckpt"}`), e.g. to reuse one score model across β sweeps.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import pickle
import re
from collections.abc import Mapping

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from sgp_lightning.envs import Env
from sgp_lightning.errors import SGPError, require
from sgp_lightning.models.base import (
    Batch,
    OptimizerFactory,
    default_optimizer,
    logs_this_step,
    validation_generator,
)
from sgp_lightning.models.distance import DistanceEstimator
from sgp_lightning.models.dynamics import DynamicsModel
from sgp_lightning.models.ensemble import EnsembleDynamicsModel
from sgp_lightning.models.iql import IQLModel
from sgp_lightning.models.policy import PolicyModel
from sgp_lightning.models.reward import RewardModel
from sgp_lightning.models.score import ScoreModel
from sgp_lightning.models.td3bc import TD3BCModel
from sgp_lightning.planning.evaluators import Evaluator

PARTS = {
    "dynamics": DynamicsModel,
    "ensemble": EnsembleDynamicsModel,  # the ensemble baselines' dynamics (and their variance penalty)
    "reward": RewardModel,
    "score": ScoreModel,
    "distance": DistanceEstimator,  # the smoothed distance to data as a value (CEM's distance penalty, C.1)
    "policy": PolicyModel,  # behaviour cloning, a baseline that acts without planning
    "td3bc": TD3BCModel,  # offline-RL baselines on the same transitions, acting without planning
    "iql": IQLModel,
}


LR_SCHEDULES = ("constant", "cosine")


class SGPSystem(L.LightningModule):
    r"""
    The learned parts of one domain (dynamics, ensemble, reward, score, distance estimator, policy), trained
    together (the sum of their losses) and planned with. Each part is built from a dict of its constructor
    arguments, so a checkpoint rebuilds from its hyperparameters alone ([`~SGPSystem.load_from_checkpoint`]).

    Args:
        domain (`str`):
            The domain's name (checked against the env's and recorded in the checkpoint).
        state_shape (`int` or `list[int]`):
            `[n]` for vector states, `[C, H, W]` for images.
        action_shape (`int` or `list[int]`):
            Likewise for actions.
        env (`Mapping`):
            The true env's Hydra config (`_target_` an [`Env`] subclass), saved so [`~SGPSystem.make_env`]
            rebuilds it.
        dynamics (`Mapping`, *optional*):
            [`DynamicsModel`] arguments; `None` switches the part off. The same for `reward`
            ([`RewardModel`]), `score` ([`ScoreModel`]), `ensemble` ([`EnsembleDynamicsModel`]), `distance`
            ([`DistanceEstimator`]), `policy` ([`PolicyModel`], behaviour cloning), `td3bc` ([`TD3BCModel`])
            and `iql` ([`IQLModel`]).
        frozen (`Mapping[str, str]`, *optional*):
            Part → checkpoint path: that part's weights are loaded from it before fitting and not trained.
        optimizer (`OptimizerFactory` or `Mapping`, *optional*):
            A factory taking `params`, or its Hydra config (`_partial_: true`), which is saved. Defaults to
            Adam with learning rate 1e-3.
        lr_schedule (`str`, *optional*, defaults to `"constant"`):
            `constant`, or `cosine`: the learning rate decays to 0 over the run's optimiser steps.
        part_lr (`Mapping[str, float]`, *optional*):
            Part → its own learning rate instead of the optimizer's, e.g. small dynamics MLPs that tolerate
            a larger one than a wide score network. Parts with an `lr` of their own (the offline-RL
            baselines) use it unless part_lr names them.
        planner_set (`str`, *optional*, defaults to `"default"`):
            The experiment's planner settings (conf/planner_set/), which plan.py and the Controller use by
            default.
        evaluator (`Mapping`, *optional*):
            The domain's evaluator config (`_target_`: `sgp_lightning.planning.OpenLoopTasks` or
            `MPCEpisodes`, with its settings); None: OpenLoopTasks. plan.py and the PlanningCallback use it.

    Every argument is a plain value (dicts, lists, numbers, strings): they are saved as the checkpoint's
    hyperparameters, which load weights-only. An OmegaConf container raises an `SGPError`.
    """

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
        td3bc: Mapping | None = None,
        iql: Mapping | None = None,
        frozen: Mapping[str, str] | None = None,
        optimizer: OptimizerFactory | Mapping | None = None,
        lr_schedule: str = "constant",
        part_lr: Mapping[str, float] | None = None,
        planner_set: str = "default",
        evaluator: Mapping | None = None,
    ):
        super().__init__()
        # Saved hyperparameters must be plain values (checkpoints load weights-only): Hydra passes them so
        # with `_convert_: all` (conf/model/*.yaml); an OmegaConf container is refused here, not saved.
        _require_plain(
            env=env, dynamics=dynamics, reward=reward, score=score, ensemble=ensemble, distance=distance,
            policy=policy, td3bc=td3bc, iql=iql, state_shape=state_shape, action_shape=action_shape, frozen=frozen,
            optimizer=optimizer, part_lr=part_lr, evaluator=evaluator,
        )  # fmt: skip
        frozen = dict(frozen or {})
        part_lr = dict(part_lr or {})  # a dict before save_hyperparameters, which saves these locals
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
            self.hparams["optimizer"] = dict(optimizer)
            optimizer = hydra.utils.instantiate(optimizer)
        self.optimizer_factory = optimizer or default_optimizer()
        self.domain, self.planner_set = domain, str(planner_set)
        configs = {
            "dynamics": dynamics, "ensemble": ensemble, "reward": reward, "score": score, "distance": distance,
            "policy": policy, "td3bc": td3bc, "iql": iql,
        }  # fmt: skip
        for offset, (name, cls) in enumerate(PARTS.items()):
            config = configs[name]
            if config is None:
                setattr(self, name, None)
            elif cls.in_val_loss:
                setattr(self, name, cls(state_shape, action_shape, **config))
            else:
                # Baselines outside the system's criterion (TD3+BC, IQL) draw their initial weights from a
                # stream of their own, seeded from the run's seed: switching them on or off leaves every
                # other part's weights and training noise as they were.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(torch.initial_seed() + 1000 + offset)
                    setattr(self, name, cls(state_shape, action_shape, **config))
        for part in frozen:
            require(getattr(self, part) is not None, f"part {part!r} is frozen but switched off (null)")
        for part in self.part_lr:
            require(
                getattr(self, part) is not None and part not in frozen,
                f"part_lr.{part} is set, but the {part} part is not trained (switched off or frozen)",
            )
        self._frozen_loaded = False

    # ---------------------------------------------------------------- loading
    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides
    ) -> SGPSystem:
        r"""
        Rebuild a system from its checkpoint alone, in eval mode, with its frozen parts inside.

        The file is read with `torch.load(weights_only=True)` only: a checkpoint that would need unsafe
        unpickling is refused, never loaded otherwise. Every bad file or value raises one SGPError naming it.

        Args:
            checkpoint_path (`str` or `os.PathLike`):
                A checkpoint written by training (`…/checkpoints/last.ckpt`).
            map_location (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
                Where the weights are loaded and the system is moved.
            **overrides:
                SGPSystem arguments replacing saved hyperparameters (not `frozen`).

        Returns:
            [`SGPSystem`]: in eval mode.
        """
        return _load_from_checkpoint(cls, checkpoint_path, map_location, overrides)

    # ---------------------------------------------------------------- composition
    @property
    def parts(self) -> dict[str, torch.nn.Module]:
        """The parts that are switched on, by name (`dynamics`, `ensemble`, `reward`, …), in a fixed order."""
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    @property
    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        """The parts that are switched on and not frozen, by name: the ones whose losses are trained."""
        return {name: part for name, part in self.parts.items() if name not in self.hparams.frozen}

    def make_env(self) -> Env:
        r"""
        A new instance of the true env, from the saved `env` config.

        Returns:
            [`Env`]: the domain's ground-truth env.
        """
        return hydra.utils.instantiate(self.hparams.env, _convert_="all")

    def make_evaluator(self, overrides: Mapping | None = None):
        """The domain's Evaluator (sgp_lightning.planning.evaluators.make_evaluator) with `overrides` of its
        settings (the PlanningCallback's; plan.py builds its own with `sgp_lightning.plan.plan_evaluator`)."""
        from sgp_lightning.planning.evaluators import make_evaluator

        return make_evaluator(self.hparams.get("evaluator"), overrides)

    def require_part(self, name: str):
        r"""
        The part called `name`, or an `SGPError` saying the system was trained without it.

        Args:
            name (`str`):
                A part's name (a key of `PARTS`: `dynamics`, `ensemble`, `reward`, `score`, `distance`,
                `policy`, `td3bc`, `iql`).

        Returns:
            [`PartModel`]: that part.
        """
        part = getattr(self, name)
        if part is None:
            raise SGPError(f"this checkpoint has no {name} model (model.{name} was null when it was trained)")
        return part

    def load_frozen_parts(self) -> None:
        """Load each frozen part's weights from its checkpoint and stop its gradients."""
        for name, path in self.hparams.frozen.items():
            try:
                other = type(self).load_from_checkpoint(path)
            except SGPError as err:
                raise SGPError(f"model.frozen.{name}: {err}") from err
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
        """Before fitting: load the frozen parts and give each trainable part the datamodule's data
        (normalization statistics, the distance estimator's reference pairs)."""
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
        r"""
        Sum of the trainable parts' losses on a batch of transitions; logs `train/<part>_loss` and
        `train/loss` on the steps the loggers write and on each epoch's last step ([`logs_this_step`]).

        Returns:
            `torch.Tensor`: the scalar loss.
        """
        losses = self._losses(batch)
        require(len(losses) > 0, "nothing to train: every part is switched off or frozen")
        loss = sum(losses.values())
        if logs_this_step(self, batch_idx):
            for name, value in losses.items():
                self.log(f"train/{name}_loss", value)
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        """A non-finite training loss (a diverging lr, bad data) stops the run with one clear error instead
        of training on NaN weights (checked once per epoch: no per-step synchronisation)."""
        bad = {
            name: float(value)
            for name, value in self.trainer.callback_metrics.items()
            if name.startswith("train/") and not torch.isfinite(value).all()
        }
        require(
            not bad,
            f"the training loss became non-finite in epoch {self.current_epoch} ({bad}); lower the learning rate "
            "or check the data",
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The global torch RNG (the noise of the score and distance losses) at this point of the run, so a
        # resumed run draws the same noise as an uninterrupted one (plain tensors: loads weights-only).
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Logs `val/<part>_loss`, with fixed noise per batch, and `val/loss`, the sum over the parts that
        count in it (not the offline-RL baselines): the best checkpoint's criterion."""
        losses = self._losses(batch, validation_generator(self.device, batch_idx))
        for name, value in losses.items():
            self.log(f"val/{name}_loss", value, sync_dist=True)
        # A system of baselines only still has a criterion: then they all count.
        counted = [value for name, value in losses.items() if self.parts[name].in_val_loss] or list(
            losses.values()
        )
        if counted:
            self.log("val/loss", sum(counted), prog_bar=True, sync_dist=True)

    def optimizer_step(self, *args, **kwargs) -> None:
        """Lightning's optimiser step, then each trainable part's `after_optimizer_step` (target networks)."""
        super().optimizer_step(*args, **kwargs)
        for part in self.trainable_parts.values():
            part.after_optimizer_step()

    def configure_optimizers(self):
        """One optimizer over the trainable parameters (a group per `part_lr` part), with the cosine
        schedule stepped per optimiser step if `lr_schedule` is `cosine`."""
        # One optimizer over independent parameter sets: for Adam this equals one optimizer per part.
        trainable = {
            name: [p for p in part.parameters() if p.requires_grad]
            for name, part in self.trainable_parts.items()
        }
        # A part's own learning rate (the offline-RL baselines': `lr` in their config), unless part_lr sets one.
        own = {name: part.lr for name, part in self.trainable_parts.items() if getattr(part, "lr", None)}
        lrs = {**own, **self.part_lr}
        if lrs:
            params = [{"params": trainable[name], "lr": lrs[name]} for name in lrs]
            params.append({"params": [p for name, ps in trainable.items() if name not in lrs for p in ps]})
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


def _require_plain(**arguments) -> None:
    """Refuse OmegaConf containers among SGPSystem's arguments: they would be saved into the checkpoint,
    which then could not be read weights-only."""
    for name, value in arguments.items():
        require(
            not OmegaConf.is_config(value),
            f"SGPSystem argument {name} is an OmegaConf {type(value).__name__}; pass plain values "
            "(instantiate the model config with _convert_: all, or OmegaConf.to_container it first)",
        )


def _cosine_factor(step: int, steps: int) -> float:
    """Cosine decay of the learning rate from 1× at step 0 to 0 at `steps`, then 0."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def _head(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values.tolist()[:3]) + (", …]" if values.numel() > 3 else "]")


# ------------------------------------------------------------------ checkpoints
# A checkpoint is read with torch.load(weights_only=True) and nothing allow-listed: only dicts, lists, numbers,
# strings and tensors come back, so no file can run code while it is read. Its hyperparameters are Hydra
# configs, though, and two of them are instantiated (the optimizer factory on construction, the env in
# make_env); their `_target_`s are checked against these classes before anything is built.
# The only Hydra _target_s a checkpoint may name, each a class it must be a subclass of, under a module prefix:
# the env (any Env subclass, so a domain of the user's own package loads too), the optimizer and the evaluator.
TARGETS = {
    "env": ("", Env),
    "optimizer": ("torch.optim.", torch.optim.Optimizer),
    "evaluator": ("sgp_lightning.planning.", Evaluator),
}
# What torch's weights-only unpickler says when it refuses to import or call something (the text after
# "WeightsUnpickler error:"); its other refusals (an unknown opcode, a bad string) mean a corrupt or foreign file.
_RUNS_CODE = re.compile(r"GLOBAL|unrecognized function|Can only (create new object|build)")


def _load_file(path: str, map_location) -> object:
    require(os.path.exists(path), f"checkpoint not found: {path}")
    require(os.path.isfile(path), f"checkpoint {path} is a directory, not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).split("WeightsUnpickler error:", 1)[-1].strip()
        if _RUNS_CODE.search(detail):
            found = re.search(r"GLOBAL ([\w.]+)", detail)
            what = f" (it pickles {found.group(1)})" if found else ""
            raise SGPError(
                f"refused to load checkpoint {path}: loading it would run code{what}; checkpoints are read "
                "with weights_only=True and may hold only plain values and tensors"
            ) from err
        raise SGPError(_unreadable(path, type(err).__name__, detail)) from err
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file fails in many ways; one message
        raise SGPError(_unreadable(path, type(err).__name__, str(err))) from err


def _unreadable(path: str, kind: str, detail: str) -> str:
    reason = (detail.strip().splitlines() or [""])[0][:200]
    return (
        f"cannot read checkpoint {path}: it is truncated or not a file written by torch.save "
        f"({kind}{': ' + reason if reason else ''})"
    )


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    r"""
    An SGPSystem checkpoint's contents (read weights-only), with one clear SGPError for any other file.

    Args:
        path (`str` or `os.PathLike`):
            The checkpoint file.
        map_location (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            Where its tensors are loaded.

    Returns:
        `dict`: Lightning's checkpoint dict, with at least `hyper_parameters` (naming a `domain`) and
        `state_dict` (tensors).
    """
    path = os.fspath(path)
    checkpoint = _load_file(path, map_location)
    require(
        isinstance(checkpoint, dict),
        f"{path} is not an sgp-lightning SGPSystem checkpoint: it holds a {type(checkpoint).__name__}, "
        "not a dict",
    )
    missing = [key for key in ("hyper_parameters", "state_dict") if key not in checkpoint]
    require(
        not missing, f"{path} is not an sgp-lightning SGPSystem checkpoint: it has no {' or '.join(missing)}"
    )
    hparams, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    require(
        isinstance(hparams, dict) and "domain" in hparams,
        f"{path} is not an sgp-lightning SGPSystem checkpoint: its hyper_parameters name no domain",
    )
    require(
        isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()),
        f"{path} is not an sgp-lightning SGPSystem checkpoint: its state_dict is not a dict of tensors",
    )
    return checkpoint


def read_hparams(path: str | os.PathLike) -> dict:
    r"""
    Only the hyperparameters of an SGPSystem checkpoint (read weights-only), e.g. to check its domain.

    Args:
        path (`str` or `os.PathLike`):
            The checkpoint file.

    Returns:
        `dict`: the SGPSystem arguments it was built with (plain values).
    """
    return dict(read_checkpoint(path)["hyper_parameters"])


def _check_targets(hparams: Mapping, path: str) -> None:
    """Refuse hyperparameters whose Hydra `_target_`s would build anything but the TARGETS."""
    for key, target in _targets(hparams):
        allowed = TARGETS.get(key)
        require(
            allowed is not None,
            f"refused to load checkpoint {path}: its hyperparameter {key or '(top level)'} names a _target_ "
            f"({target!r}); only {' and '.join(TARGETS)} may",
        )
        prefix, base = allowed
        cls = None
        if isinstance(target, str) and target.startswith(prefix):
            try:
                cls = hydra.utils.get_class(target)
            except Exception:  # noqa: BLE001 - not found or not a class: refused below
                cls = None
        require(
            isinstance(cls, type) and issubclass(cls, base),
            f"refused to load checkpoint {path}: its {key} _target_ {target!r} is not a subclass of "
            f"{base.__name__}" + (f" under {prefix}" if prefix else ""),
        )


def _targets(value, key: str = ""):
    if isinstance(value, Mapping):
        if "_target_" in value:
            yield key, value["_target_"]
        for name, item in value.items():
            yield from _targets(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _targets(item, f"{key}[{i}]")


def _state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """What differs between the model's state_dict and a checkpoint's, in one line."""

    def listed(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} is {list(found[k].shape)} in the file, {list(expected[k].shape)} in the model"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    parts = [
        f"{label}: {listed(items)}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shapes differ", shapes))
        if items
    ]
    return "; ".join(parts)


def _load_from_checkpoint(
    cls: type[SGPSystem], checkpoint_path: str | os.PathLike, map_location, overrides: dict
) -> SGPSystem:
    path = os.fspath(checkpoint_path)
    checkpoint = read_checkpoint(path, map_location)
    arguments = {name: p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"}
    unknown = sorted(set(overrides) - set(arguments))
    require(
        not unknown,
        f"cannot load {path} with {unknown}: not SGPSystem arguments (they are {sorted(arguments)})",
    )
    require(
        "frozen" not in overrides,
        f"cannot load {path} with frozen=: the frozen parts' weights are already inside the checkpoint",
    )
    saved = dict(checkpoint["hyper_parameters"])
    unknown = sorted(set(saved) - set(arguments))
    require(not unknown, f"{path} has hyper_parameters that SGPSystem does not take: {unknown}")
    hparams = {**saved, **overrides, "frozen": {}}  # frozen weights are already inside the checkpoint
    required = [name for name, p in arguments.items() if p.default is inspect.Parameter.empty]
    missing = [name for name in required if name not in hparams]
    require(
        not missing,
        f"{path} is not an sgp-lightning SGPSystem checkpoint: its hyper_parameters lack {missing}",
    )
    _check_targets(hparams, path)
    try:
        system = cls(**hparams)
    except (SGPError, TypeError, ValueError, KeyError, InstantiationException) as err:
        raise SGPError(f"cannot rebuild the system of {path} from its hyper_parameters: {err}") from err
    try:
        system.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        summary = (
            _state_dict_mismatch(system.state_dict(), checkpoint["state_dict"]) or str(err).splitlines()[0]
        )
        built = f" (with {', '.join(sorted(overrides))} overridden)" if overrides else ""
        raise SGPError(
            f"{path} does not fit the network built from its hyper_parameters{built}: {summary}"
        ) from err
    frozen = dict(saved.get("frozen") or {})
    require(set(frozen) <= set(PARTS), f"{path} freezes unknown parts {sorted(set(frozen) - set(PARTS))}")
    system.hparams["frozen"] = frozen  # kept for the record (and so a further fit keeps them frozen)
    for name in frozen:
        system.require_part(name).requires_grad_(False)
    system._frozen_loaded = True
    if isinstance(map_location, str | torch.device):
        system = system.to(map_location)
    return system.eval()
