"""Shared training plumbing for the part models (dynamics, ensemble, reward, score, distance, policy)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch import nn

from sgp_lightning.errors import require
from sgp_lightning.normalization import Normalizer
from sgp_lightning.spaces import Shape, as_shape, is_image, join, pair_shape, stats_shape

Batch = dict[str, torch.Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
ARCHITECTURES = ("mlp", "unet")


def validation_generator(device: torch.device, batch_idx: int) -> torch.Generator:
    r"""
    Fixed noise per validation batch, so noisy losses (the score's) are comparable across epochs.

    Args:
        device (`torch.device`):
            Where the batch lives (the generator draws there).
        batch_idx (`int`):
            Index of the validation batch; it is the seed.

    Returns:
        `torch.Generator`: seeded with `batch_idx`.
    """
    return torch.Generator(device=device).manual_seed(batch_idx)


def logs_this_step(module: L.LightningModule, batch_idx: int) -> bool:
    r"""
    Whether a training step logs its losses (`self.log`): on the steps the loggers write (every
    `trainer.log_every_n_steps`, as Lightning decides it), on an epoch's last step and on the run's last.

    A `self.log` call costs about 0.4 ms on a CPU (Lightning moves, copies and updates its metric state each
    time), so logging every part's loss on every step took about a tenth of the default pit system's step
    time (benchmarks/train_loop.py). The loggers only write every `log_every_n_steps` steps, so TensorBoard
    gets the same values at the same steps; the last step of an epoch (and of a `max_steps` run) is logged
    too, so `trainer.callback_metrics` holds the epoch's final `train/*` values at `on_train_epoch_end` (the
    non-finite check reads them), as before. Only the progress bar's `train/loss` now changes on those
    steps instead of every step.

    Args:
        module (`LightningModule`):
            The module in its `training_step`; without a trainer, every step logs.
        batch_idx (`int`):
            The step's batch index within the epoch.

    Returns:
        `bool`: log this step.
    """
    trainer = module._trainer
    if trainer is None or trainer.fast_dev_run:
        return True
    # Lightning's own test (its LearningRateMonitor uses it too): the steps whose metrics reach the loggers.
    connector = getattr(trainer, "_logger_connector", None)
    if connector is None or connector.should_update_logs:
        return True
    last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
    last_of_run = 0 <= trainer.max_steps <= trainer.global_step + 1
    return last_of_epoch or last_of_run


def default_optimizer() -> OptimizerFactory:
    r"""
    The optimizer a part uses when given none.

    Returns:
        `OptimizerFactory`: `torch.optim.Adam` with learning rate 1e-3, waiting for `params`.
    """
    return functools.partial(torch.optim.Adam, lr=1e-3)


def build_network(
    architecture: str,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    hidden_dims: Sequence[int],
    activation: str,
    unet: Mapping | None,
) -> nn.Module:
    r"""
    An MLP for vectors or a U-Net for images, mapping `in_shape` → `out_shape` (leading dims kept).

    Args:
        architecture (`str`):
            `"mlp"` (vectors) or `"unet"` (images); the other kind of shape is refused with an `SGPError`.
        in_shape (`tuple[int, ...]`):
            Input shape without batch dims: `(n,)` or `(C, H, W)`.
        out_shape (`tuple[int, ...]`):
            Output shape without batch dims, of the same kind (for a U-Net, the same `H, W`).
        hidden_dims (`Sequence[int]`):
            The MLP's hidden layer widths (unused by the U-Net).
        activation (`str`):
            The MLP's activation: `relu`, `silu`, `tanh`, `elu` or `gelu` (unused by the U-Net).
        unet (`Mapping`, *optional*):
            The U-Net's keyword arguments (`block_out_channels`, `layers_per_block`, …; see
            [`sgp_lightning.nets.UNet`]); unused by the MLP.

    Returns:
        `nn.Module`: the untrained network, `(…, *in_shape) → (…, *out_shape)`.
    """
    from sgp_lightning.nets import MLP, UNet

    require(
        architecture in ARCHITECTURES, f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}"
    )
    if architecture == "mlp":
        require(
            not is_image(in_shape) and not is_image(out_shape),
            f"architecture=mlp takes vectors, got shapes {in_shape} → {out_shape}; use architecture=unet",
        )
        return MLP(in_shape[0], out_shape[0], list(hidden_dims), activation)
    require(
        is_image(in_shape) and is_image(out_shape),
        f"architecture=unet takes images, got shapes {in_shape} → {out_shape}; use architecture=mlp",
    )
    return UNet(in_shape[0], out_shape[0], sample_size=in_shape[1], **dict(unet or {}))


class PartModel(L.LightningModule):
    r"""
    A model trained on transition batches with one loss; usable alone (a `LightningModule` fitted on a
    transition datamodule) or inside [`SGPSystem`], which sums its parts' losses. Subclasses implement
    `loss` and `set_normalizers`; the metrics are `train/<part_name>_loss` and `val/<part_name>_loss`.

    Args:
        optimizer (`OptimizerFactory`, *optional*):
            A callable taking `params` and returning a `torch.optim.Optimizer` (e.g. a `functools.partial`
            or a Hydra `_partial_: true` config, instantiated). Defaults to Adam with learning rate 1e-3.
    """

    part_name = "part"
    acts = False  # a policy x → u that PolicyPlanner can act with (BC, TD3+BC, IQL)
    # counts in SGPSystem's `val/loss` (the best checkpoint's criterion); parts that do not (the offline-RL
    # baselines) also draw their initial weights from a random stream of their own (SGPSystem.__init__)
    in_val_loss = True

    def __init__(self, optimizer: OptimizerFactory | None = None):
        super().__init__()
        self.optimizer_factory = optimizer or default_optimizer()

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""
        The training loss on one batch.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions in the data's units: `x` and `x_next` `(B, *state_shape)`, `u`
                `(B, *action_shape)`, `r` `(B,)` (and optionally `done` `(B,)`).
            generator (`torch.Generator`, *optional*):
                Source of the loss's noise, if it draws any; validation passes a fixed one
                ([`validation_generator`]), training none (the global RNG).

        Returns:
            `torch.Tensor`: the scalar loss (mean over the batch).
        """
        raise NotImplementedError

    def set_normalizers(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        r"""
        Set the normalizer buffers from the training split's statistics.

        Args:
            stats (`dict[str, tuple[torch.Tensor, torch.Tensor]]`):
                `(mean, std)` per quantity, as `TransitionDataModule.compute_stats` returns them: keys `x`,
                `u`, `x_next`, `dx` (x' − x), `r` and `xu` (the joined pair), each per coordinate (vectors)
                or per channel, shape `(C, 1, 1)` (images).
        """
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """The part's loss on a training batch, logged as `train/<part_name>_loss` ([`logs_this_step`])."""
        loss = self.loss(batch)
        if logs_this_step(self, batch_idx):
            self.log(f"train/{self.part_name}_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """The part's loss on a validation batch (fixed noise per batch), logged as `val/<part_name>_loss`."""
        loss = self.loss(batch, validation_generator(self.device, batch_idx))
        self.log(f"val/{self.part_name}_loss", loss, sync_dist=True)

    def set_data(self, datamodule) -> None:
        r"""
        What the part takes from the training data before fitting: its normalization statistics (and, for
        parts that need more, e.g. the distance estimator's reference set, that too). Called in `setup`.

        Args:
            datamodule (`TransitionDataModule`):
                A datamodule after `setup` (its `stats` and `train_data` are filled).
        """
        self.set_normalizers(datamodule.stats)

    def setup(self, stage: str) -> None:
        """Before fitting with a datamodule, [`~PartModel.set_data`] from it."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None:
            self.set_data(datamodule)

    def after_optimizer_step(self) -> None:
        """Called once after every optimiser step of the part's parameters (by itself when trained alone,
        by [`SGPSystem`] inside a system): where target networks follow their online networks. No-op."""

    def optimizer_step(self, *args, **kwargs) -> None:
        """Lightning's optimiser step, then [`~PartModel.after_optimizer_step`]."""
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def configure_optimizers(self):
        """The optimizer factory's optimizer over the parameters that require gradients."""
        return self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])


class PairModel(PartModel):
    r"""
    A part over the joined pair z = (x, u), normalized with the pair's own statistics (`xu`) and conditioned
    on the noise levels σ_k of a schedule: the score model and the data-distance estimator.

    Args:
        state_shape, action_shape (`int` or `list[int]`):
            As in [`StateActionModel`].
        schedule, sigma_max, sigma_min, num_levels:
            The noise levels σ_0 > … > σ_{L−1} in normalized units (see [`NoiseSchedule.build`]).
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`].
    """

    def __init__(
        self, state_shape, action_shape, schedule: str, sigma_max: float, sigma_min: float, num_levels: int,
        optimizer: OptimizerFactory | None = None,
    ):  # fmt: skip
        from sgp_lightning.schedules import NoiseSchedule

        super().__init__(optimizer)
        self.state_shape, self.action_shape = as_shape(state_shape), as_shape(action_shape)
        self.pair_shape = pair_shape(self.state_shape, self.action_shape)
        self.schedule = NoiseSchedule.build(schedule, sigma_max, sigma_min, num_levels)
        self.pair_norm = Normalizer(stats_shape(self.pair_shape))

    def set_normalizers(self, stats) -> None:
        """Reads the joined pair's statistics, `xu`."""
        self.pair_norm.set_stats(*stats["xu"])

    def normalize_pair(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        The part's input z: x and u joined, then normalized.

        Args:
            x, u (`torch.Tensor`):
                States `(…, *state_shape)` and actions `(…, *action_shape)` in the data's units.

        Returns:
            `torch.Tensor` of shape `(…, *pair_shape)`: z in normalized units.
        """
        return self.pair_norm(join(x, u, self.state_shape))


class StateActionModel(PartModel):
    r"""
    A part reading normalized (x, u): vectors joined along features, images along channels. It keeps the
    state and action normalizers (`state_norm`, `action_norm`) as buffers, so checkpoints carry them.

    Args:
        state_shape (`int` or `list[int]`):
            `n` or `[n]` for vector states, `[C, H, W]` for images.
        action_shape (`int` or `list[int]`):
            Likewise for actions; images must have the states' `H, W`.
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`].
    """

    def __init__(self, state_shape, action_shape, optimizer: OptimizerFactory | None = None):
        super().__init__(optimizer)
        self.state_shape, self.action_shape = as_shape(state_shape), as_shape(action_shape)
        self.input_shape = pair_shape(self.state_shape, self.action_shape)
        self.state_norm = Normalizer(stats_shape(self.state_shape))
        self.action_norm = Normalizer(stats_shape(self.action_shape))

    def set_normalizers(self, stats) -> None:
        """Reads the `x` and `u` statistics (see [`PartModel.set_normalizers`])."""
        self.state_norm.set_stats(*stats["x"])
        self.action_norm.set_stats(*stats["u"])

    def normalized_input(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        The network's input: normalized x and u joined.

        Args:
            x (`torch.Tensor` of shape `(…, *state_shape)`):
                States in the data's units.
            u (`torch.Tensor` of shape `(…, *action_shape)`):
                Actions in the data's units, with the same leading dims.

        Returns:
            `torch.Tensor` of shape `(…, *input_shape)`: `(…, n + m)` for vectors, `(…, C_x + C_u, H, W)`
            for images.
        """
        return join(self.state_norm(x), self.action_norm(u), self.state_shape)


class MLPModel(StateActionModel):
    r"""
    A part of vector domains whose network is one MLP, from the shape `mlp_shapes()` names as its input to
    the one it names as its output (the reward model: (x, u) → r; the policy: x → u).

    Args:
        state_shape (`int` or `list[int]`):
            `n` or `[n]`.
        action_shape (`int` or `list[int]`):
            `m` or `[m]`.
        hidden_dims (`Sequence[int]`, *optional*, defaults to `(256, 256)`):
            Hidden layer widths.
        activation (`str`, *optional*, defaults to `"relu"`):
            `relu`, `silu`, `tanh`, `elu` or `gelu`.
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`].
    """

    def __init__(
        self,
        state_shape,
        action_shape,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(state_shape, action_shape, optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.net = build_network("mlp", *self.mlp_shapes(), hidden_dims, activation, None)

    def mlp_shapes(self) -> tuple[Shape, Shape]:
        r"""
        The MLP's input and output shapes (checking that the part suits the domain's shapes).

        Returns:
            `tuple[Shape, Shape]`: `((in_dim,), (out_dim,))`.
        """
        raise NotImplementedError
