"""U-Nets on diffusers' UNet2DModel for image domains (paper C.3): a plain image-to-image U-Net for the
dynamics and the noise-conditioned score U-Net, whose conditioning input is the noise-level index.

Both take plain numbers and lists (diffusers style) and accept any leading batch shape (…, C, H, W).
Widths that the group norm cannot split and image sizes the U-Net cannot halve fail up front.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sgp_lightning.errors import require


def check_unet_config(
    sample_size: int, block_out_channels: Sequence[int], norm_num_groups: int, attention_head_dim: int
) -> list[int]:
    channels = [int(c) for c in block_out_channels]
    require(len(channels) >= 1 and all(c > 0 for c in channels), f"bad block_out_channels {channels}")
    bad = [c for c in channels if c % norm_num_groups]
    require(
        not bad,
        f"U-Net block widths {bad} are not divisible by norm_num_groups={norm_num_groups}: group norm "
        f"splits each block's channels into {norm_num_groups} equal groups",
    )
    factor = 2 ** (len(channels) - 1)
    require(
        sample_size % factor == 0,
        f"image size {sample_size} cannot be halved {len(channels) - 1} times by a U-Net with "
        f"{len(channels)} blocks; use a size divisible by {factor} or fewer blocks",
    )
    require(
        channels[-1] % attention_head_dim == 0,
        f"the U-Net's last width {channels[-1]} is not divisible by attention_head_dim={attention_head_dim}",
    )
    return channels


def build_unet2d(
    in_channels: int,
    out_channels: int,
    sample_size: int,
    block_out_channels: Sequence[int],
    layers_per_block: int,
    norm_num_groups: int,
    attention: bool,
    attention_head_dim: int,
) -> nn.Module:
    from diffusers import UNet2DModel

    channels = check_unet_config(sample_size, block_out_channels, norm_num_groups, attention_head_dim)
    require(layers_per_block >= 1, f"layers_per_block must be ≥ 1, got {layers_per_block}")
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels),
        norm_num_groups=norm_num_groups,
        add_attention=attention,  # one self-attention in the bottleneck: global reach at low cost
        attention_head_dim=attention_head_dim,
        time_embedding_type="positional",
    )


class _UNetBase(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        sample_size: int = 32,
        block_out_channels: Sequence[int] = (32, 64, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        attention: bool = True,
        attention_head_dim: int = 8,
    ):
        super().__init__()
        self.image_shape = (int(in_channels), int(sample_size), int(sample_size))
        self.out_channels = int(out_channels)
        self.unet = build_unet2d(
            in_channels, out_channels, sample_size, block_out_channels, layers_per_block,
            norm_num_groups, attention, attention_head_dim,
        )  # fmt: skip

    def _run(self, z: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        require(
            tuple(z.shape[-3:]) == self.image_shape,
            f"U-Net input must end in {self.image_shape}, got {tuple(z.shape)}",
        )
        leading = z.shape[:-3]
        flat = z.reshape(-1, *self.image_shape)
        timestep = timestep.expand(leading).reshape(-1)
        out = self.unet(flat, timestep).sample
        return out.reshape(*leading, *out.shape[1:])


class UNet(_UNetBase):
    """Image-to-image U-Net (…, C_in, H, W) → (…, C_out, H, W). Its time input is fixed at 0."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(z, torch.zeros((), dtype=torch.long, device=z.device))


class NoiseConditionedUNet(_UNetBase):
    """s(z, k) = unet(z, k) / σ_k: the level index k is the U-Net's timestep input (NCSNv2 convention,
    1/σ applied here and nowhere else). Output has the input's shape."""

    sigmas: torch.Tensor

    def __init__(self, channels: int, sigmas: Sequence[float] | torch.Tensor, **unet):
        super().__init__(channels, channels, **unet)
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32).flatten().clone())

    def forward(self, z: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        level = torch.as_tensor(level, device=z.device, dtype=torch.long).expand(z.shape[:-3])
        return self._run(z, level) / self.sigmas[level][..., None, None, None]
