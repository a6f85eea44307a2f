"""Noise-conditioned score s_θ(z, k) ≈ ∇_z log p_σk(z) of normalized (x, u) pairs (paper §3.2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from sgp_lightning.errors import require
from sgp_lightning.models.base import ARCHITECTURES, Batch, OptimizerFactory, PairModel
from sgp_lightning.nets import NoiseConditionedMLP, NoiseConditionedUNet
from sgp_lightning.spaces import feature_sum, is_image


class ScoreModel(PairModel):
    r"""
    Noise-conditioned score s_θ(z, k) ≈ ∇_z log p_σk(z), trained by denoising score matching (eq. 10) with
    one random level per sample: loss = ‖σ·s(z + σε) + ε‖².

    z is the normalized pair (x, u): a vector, or for image domains the state and action images stacked
    as channels. The network is a NoiseConditionedMLP or a NoiseConditionedUNet (`architecture`).

    Args:
        state_shape, action_shape (`int` or `list[int]`):
            `[n]` for vector states and actions, `[C, H, W]` for images of one size.
        architecture (`str`, *optional*, defaults to `"mlp"`):
            `mlp` for vector pairs, `unet` for image pairs.
        hidden_dims (`Sequence[int]`, *optional*, defaults to `(512, 512, 512)`):
            The noise-conditioned MLP's hidden layer widths.
        activation (`str`, *optional*, defaults to `"silu"`):
            The MLP's activation.
        schedule (`str`, *optional*, defaults to `"geometric"`):
            How the noise levels are spaced: `geometric` or `cosine` (see [`NoiseSchedule.build`]).
        sigma_max (`float`, *optional*, defaults to 0.3):
            σ_0, the largest noise level, in normalized units.
        sigma_min (`float`, *optional*, defaults to 0.02):
            σ_{L−1}, the smallest noise level, in normalized units.
        num_levels (`int`, *optional*, defaults to 10):
            L, the number of noise levels.
        unet (`Mapping`, *optional*):
            The U-Net's settings, for `architecture="unet"` (see [`sgp_lightning.nets.NoiseConditionedUNet`]).
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`].
    """

    part_name = "score"

    def __init__(
        self,
        state_shape,
        action_shape,
        architecture: str = "mlp",
        hidden_dims: Sequence[int] = (512, 512, 512),
        activation: str = "silu",
        schedule: str = "geometric",
        sigma_max: float = 0.3,
        sigma_min: float = 0.02,
        num_levels: int = 10,
        unet: Mapping | None = None,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(state_shape, action_shape, schedule, sigma_max, sigma_min, num_levels, optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        require(
            architecture in ARCHITECTURES,
            f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}",
        )
        require(
            is_image(self.pair_shape) == (architecture == "unet"),
            f"score architecture={architecture} does not suit (x, u) of shape {self.pair_shape}: "
            "use mlp for vectors and unet for images",
        )
        if architecture == "unet":
            self.net = NoiseConditionedUNet(
                self.pair_shape[0], self.schedule.sigmas, sample_size=self.pair_shape[1], **dict(unet or {})
            )
        else:
            self.net = NoiseConditionedMLP(
                self.pair_shape[0], self.schedule.sigmas, list(hidden_dims), activation
            )

    def forward(self, z: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        r"""
        The score ∇_z log p_σ(z) at noise level σ = `schedule.sigmas[level]`.

        Args:
            z (`torch.Tensor` of shape `(…, *pair_shape)`):
                Normalized pairs, as [`~ScoreModel.normalize_pair`] returns them.
            level (`torch.Tensor` or `int`):
                Noise level index k in `[0, num_levels)`: one for all, or one per pair (shape `(…)`).

        Returns:
            `torch.Tensor` of shape `z.shape`: the score, in 1 / normalized units.
        """
        return self.net(z, level)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""
        Denoising score matching: ‖σ·s(z + σε, k) + ε‖² summed over z's features, with a uniform random
        level k and ε ~ N(0, I) per sample.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x` and `u`.
            generator (`torch.Generator`, *optional*):
                Source of the levels and the noise (validation passes a fixed one).

        Returns:
            `torch.Tensor`: the scalar loss (mean over the batch), dimensionless.
        """
        z = self.normalize_pair(batch["x"], batch["u"])
        level = torch.randint(0, self.schedule.num_levels, z.shape[:1], device=z.device, generator=generator)
        noise = torch.randn(z.shape, device=z.device, generator=generator, dtype=z.dtype)
        sigma = self.schedule.sigmas[level].view(-1, *([1] * len(self.pair_shape)))
        return feature_sum((sigma * self(z + sigma * noise, level) + noise).square(), self.pair_shape).mean()
