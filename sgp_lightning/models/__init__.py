"""LightningModules: one per learned part, and SGPSystem composing them."""

from sgp_lightning.models.distance import DistanceEstimator
from sgp_lightning.models.dynamics import DynamicsModel
from sgp_lightning.models.ensemble import EnsembleDynamicsModel
from sgp_lightning.models.iql import IQLModel
from sgp_lightning.models.policy import PolicyModel
from sgp_lightning.models.reward import RewardModel
from sgp_lightning.models.score import ScoreModel
from sgp_lightning.models.system import SGPSystem, read_checkpoint, read_hparams
from sgp_lightning.models.td3bc import TD3BCModel

__all__ = [
    "DistanceEstimator",
    "DynamicsModel",
    "EnsembleDynamicsModel",
    "IQLModel",
    "PolicyModel",
    "RewardModel",
    "SGPSystem",
    "ScoreModel",
    "TD3BCModel",
    "read_checkpoint",
    "read_hparams",
]
