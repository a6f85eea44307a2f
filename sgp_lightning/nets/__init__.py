"""Plain nn.Modules built from plain config values (numbers and lists), so checkpoints rebuild from hparams."""

from sgp_lightning.nets.ensemble import Ensemble
from sgp_lightning.nets.mlp import MLP, NoiseConditionedMLP
from sgp_lightning.nets.unet import NoiseConditionedUNet, UNet

__all__ = ["MLP", "Ensemble", "NoiseConditionedMLP", "NoiseConditionedUNet", "UNet"]
