"""Shared training plumbing for the part models (dynamics, ensemble, reward, score)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch import nn

from sgp_lightning.errors import require
from sgp_lightning.normalization import Normalizer
from sgp_lightning.spaces import as_shape, is_image, join, pair_shape, stats_shape

Batch = dict[str, torch.Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
ARCHITECTURES = ("mlp", "unet")


def validation_generator(device: torch.device, batch_idx: int) -> torch.Generator:
    """Fixed noise per validation batch, so noisy losses (the score's) are comparable across epochs."""
    return torch.Generator(device=device).manual_seed(batch_idx)


def default_optimizer() -> OptimizerFactory:
    return functools.partial(torch.optim.Adam, lr=1e-3)


def build_network(
    architecture: str,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    hidden_dims: Sequence[int],
    activation: str,
    unet: Mapping | None,
) -> nn.Module:
    """An MLP for vectors or a U-Net for images, mapping in_shape → out_shape (leading dims kept)."""
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
    """A model trained on transition batches with one loss; usable alone or inside SGPSystem."""

    part_name = "part"

    def __init__(self, optimizer: OptimizerFactory | None = None):
        super().__init__()
        self.optimizer_factory = optimizer or default_optimizer()

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def set_normalizers(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log(f"train/{self.part_name}_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss = self.loss(batch, validation_generator(self.device, batch_idx))
        self.log(f"val/{self.part_name}_loss", loss, sync_dist=True)

    def set_data(self, datamodule) -> None:
        """What the part takes from the training data before fitting: its normalization statistics (and,
        for parts that need more, e.g. the distance estimator's reference set, that too)."""
        self.set_normalizers(datamodule.stats)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None:
            self.set_data(datamodule)

    def configure_optimizers(self):
        return self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])


class StateActionModel(PartModel):
    """A part reading normalized (x, u): vectors joined along features, images along channels."""

    def __init__(self, state_shape, action_shape, optimizer: OptimizerFactory | None = None):
        super().__init__(optimizer)
        self.state_shape, self.action_shape = as_shape(state_shape), as_shape(action_shape)
        self.input_shape = pair_shape(self.state_shape, self.action_shape)
        self.state_norm = Normalizer(stats_shape(self.state_shape))
        self.action_norm = Normalizer(stats_shape(self.action_shape))

    def set_normalizers(self, stats) -> None:
        self.state_norm.set_stats(*stats["x"])
        self.action_norm.set_stats(*stats["u"])

    def normalized_input(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return join(self.state_norm(x), self.action_norm(u), self.state_shape)
