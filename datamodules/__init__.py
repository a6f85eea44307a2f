"""One LightningDataModule per domain; base.py holds the shared transition logic."""

from datamodules.base import TransitionDataModule
from datamodules.integrator import IntegratorDataModule

__all__ = ["IntegratorDataModule", "TransitionDataModule"]
