"""Box-pushing data (paper C.4): ~100 scripted demonstrations (~750 transitions), or a recorded log file."""

from __future__ import annotations

import torch

from datamodules.base import TransitionDataModule
from sgp_lightning.data.box_pushing import check_log_geometry, demonstrate, load_log
from sgp_lightning.envs.box_pushing import BoxPushingEnv


class BoxPushingDataModule(TransitionDataModule):
    """`log`: a log file in the format of `sgp_lightning.data.box_pushing` (e.g. a real robot's), whose marker
    distances and pusher motion must match the env within `log_tolerance` cm on average; null runs the
    scripted demonstrator in the true env (`num_demos` demonstrations of at most `max_steps` steps)."""

    def __init__(
        self,
        env: BoxPushingEnv,
        log: str | None = None,
        num_demos: int = 100,
        max_steps: int = 10,
        max_step: float = 5.0,
        action_noise: float = 0.3,
        log_tolerance: float = 0.5,
        **kwargs,
    ):
        super().__init__(name=f"{env.name} {'log ' + str(log) if log else 'demonstrations'}", **kwargs)
        self.env, self.log = env, log
        self.num_demos, self.max_steps = int(num_demos), int(max_steps)
        self.max_step, self.action_noise = float(max_step), float(action_noise)
        self.log_tolerance = float(log_tolerance)

    def load_transitions(self) -> dict[str, torch.Tensor]:
        if self.log:
            data = load_log(self.log, self.env.state_dim, self.env.action_dim)
            check_log_geometry(data, self.env, self.log_tolerance, f"box-pushing log {self.log}")
        else:
            data = demonstrate(
                self.env, self.num_demos, self.max_steps, self.seed, max_step=self.max_step,
                action_noise=self.action_noise,
            )  # fmt: skip
        return {
            "x": data["x"],
            "u": data["u"],
            "x_next": data["x_next"],
            "r": self.env.reward(data["x"], data["u"]),
        }
