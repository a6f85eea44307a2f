"""sgp-lightning: Score-Guided Planning (Suh et al., CoRL 2023) on PyTorch Lightning + Hydra."""

from sgp_lightning.errors import SGPError

__all__ = ["SGPError"]
__version__ = "0.1.0"
