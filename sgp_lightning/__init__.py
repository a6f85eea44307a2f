"""sgp-lightning: Score-Guided Planning (Suh et al., CoRL 2023) on PyTorch Lightning + Hydra."""

from sgp_lightning.errors import SGPError
from sgp_lightning.planning.controller import Controller

__all__ = ["Controller", "SGPError"]
__version__ = "0.1.0"
