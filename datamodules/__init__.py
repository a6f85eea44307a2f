"""One LightningDataModule per domain; base.py holds the shared transition logic."""

from datamodules.base import TransitionDataModule
from datamodules.box_pushing import BoxPushingDataModule
from datamodules.cartpole import CartPoleDataModule
from datamodules.d4rl import D4RLDataModule
from datamodules.integrator import DemonstrationDataModule, IntegratorDataModule
from datamodules.offline import OfflineDataModule
from datamodules.pixel import PixelDataModule

__all__ = [
    "BoxPushingDataModule",
    "CartPoleDataModule",
    "D4RLDataModule",
    "DemonstrationDataModule",
    "IntegratorDataModule",
    "OfflineDataModule",
    "PixelDataModule",
    "TransitionDataModule",
]
