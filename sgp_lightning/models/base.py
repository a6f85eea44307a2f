"""Shared training plumbing for the part models (dynamics, reward, score)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import lightning as L
import torch

Batch = dict[str, torch.Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]


def validation_generator(device: torch.device, batch_idx: int) -> torch.Generator:
    """Fixed noise per validation batch, so noisy losses (the score's) are comparable across epochs."""
    return torch.Generator(device=device).manual_seed(batch_idx)


def default_optimizer() -> OptimizerFactory:
    return functools.partial(torch.optim.Adam, lr=1e-3)


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

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None:
            self.set_normalizers(datamodule.stats)

    def configure_optimizers(self):
        return self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
