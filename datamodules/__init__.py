"""One LightningDataModule per domain; base.py holds the shared transition logic."""

from datamodules.base import TransitionDataModule
from datamodules.cartpole import CartPoleDataModule
from datamodules.integrator import IntegratorDataModule
from datamodules.pixel import PixelDataModule

__all__ = ["CartPoleDataModule", "IntegratorDataModule", "PixelDataModule", "TransitionDataModule"]
