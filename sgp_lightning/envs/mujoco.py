"""gymnasium MuJoCo v5 locomotion tasks and D4RL's normalised score.

The `d4rl` package cannot run offline (it needs MuJoCo 2.1 binaries and downloads its data), so the
project uses gymnasium's MuJoCo v5 envs, which are statistically close to D4RL's v2 envs but not
identical: results are labelled "v5, D4RL-normalised".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgp_lightning.errors import require


@dataclass(frozen=True)
class MujocoTask:
    """One locomotion task: its gymnasium id and D4RL's reference returns (random and expert)."""

    name: str
    gym_id: str
    ref_min_score: float
    ref_max_score: float
    medium_return: float  # rough mean episode return of D4RL's medium dataset (the behaviour policy's level)

    def normalized_score(self, returns):
        """D4RL's normalised score: 100 · (R − random) / (expert − random)."""
        return (
            100.0
            * (np.asarray(returns, dtype=np.float64) - self.ref_min_score)
            / (self.ref_max_score - self.ref_min_score)
        )


# Reference returns are D4RL's (d4rl/infos.py, v2 envs).
MUJOCO_TASKS: dict[str, MujocoTask] = {
    "halfcheetah": MujocoTask("halfcheetah", "HalfCheetah-v5", -280.178953, 12135.0, 4800.0),
    "hopper": MujocoTask("hopper", "Hopper-v5", -20.272305, 3234.3, 1400.0),
    "walker2d": MujocoTask("walker2d", "Walker2d-v5", 1.629008, 4592.3, 2900.0),
}


def mujoco_task(name: str) -> MujocoTask:
    require(name in MUJOCO_TASKS, f"unknown MuJoCo task {name!r}; choose one of {sorted(MUJOCO_TASKS)}")
    return MUJOCO_TASKS[name]
