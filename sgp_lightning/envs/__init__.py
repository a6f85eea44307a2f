"""Ground-truth domains. Each is built by Hydra from `conf/domain/<name>.yaml` (key `env`)."""

from sgp_lightning.envs.base import Env, Tasks
from sgp_lightning.envs.box_pushing import BoxPushingEnv
from sgp_lightning.envs.cartpole import CartPoleEnv
from sgp_lightning.envs.integrator import IntegratorEnv
from sgp_lightning.envs.mujoco import MujocoEnv
from sgp_lightning.envs.offline import OfflineEnv
from sgp_lightning.envs.pixel_integrator import PixelIntegratorEnv

__all__ = [
    "BoxPushingEnv",
    "CartPoleEnv",
    "Env",
    "IntegratorEnv",
    "MujocoEnv",
    "OfflineEnv",
    "PixelIntegratorEnv",
    "Tasks",
]
