"""Plain nn.Modules built from plain config values (numbers and lists), so checkpoints rebuild from hparams."""

from sgp_lightning.nets.mlp import MLP, NoiseConditionedMLP

__all__ = ["MLP", "NoiseConditionedMLP"]
