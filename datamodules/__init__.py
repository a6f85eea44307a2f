"""One LightningDataModule per domain; base.py holds the shared transition logic."""

from datamodules.base import TransitionDataModule
from datamodules.integrator import IntegratorDataModule
from datamodules.pixel import PixelDataModule

__all__ = ["IntegratorDataModule", "PixelDataModule", "TransitionDataModule"]
