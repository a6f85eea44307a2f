"""Cart-pole data (paper C.1): uniform (x, u) in the data box, keeping transitions that stay in the box."""

from __future__ import annotations

import torch

from datamodules.base import SampledDataModule
from sgp_lightning.envs.cartpole import CartPoleEnv
from sgp_lightning.errors import require


class CartPoleDataModule(SampledDataModule):
    """Uniform cart-pole transitions whose next state stays in the data box."""

    def __init__(self, env: CartPoleEnv, num_samples: int = 1_000_000, **kwargs):
        super().__init__(env, num_samples, **kwargs)

    def load_transitions(self) -> dict[str, torch.Tensor]:
        """`num_samples` transitions whose x and x' both lie in the data box, drawn in oversized batches
        (rejection sampling, no per-sample loop)."""
        generator = torch.Generator().manual_seed(self.seed)
        kept: list[dict[str, torch.Tensor]] = []
        count, draws = 0, 0
        while count < self.num_samples:
            require(draws < 50, "the data box keeps almost no transitions: check state_low/state_high and dt")
            draw = int((self.num_samples - count) * 1.3) + 1024
            x = self.env.sample_states(draw, generator)
            u = self.env.sample_actions(draw, generator)
            x_next = self.env.step(x, u)
            keep = self.env.in_box(x_next)  # x is in the box by construction
            kept.append({"x": x[keep], "u": u[keep], "x_next": x_next[keep]})
            count += int(keep.sum())
            draws += 1
        data = {k: torch.cat([part[k] for part in kept])[: self.num_samples] for k in ("x", "u", "x_next")}
        data["r"] = self.env.reward(data["x"], data["u"])
        return data
