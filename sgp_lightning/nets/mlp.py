"""MLPs: a plain one for dynamics and reward, and the paper's noise-conditioned one for the score (C.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sgp_lightning.errors import require

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    require(name in ACTIVATIONS, f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _check_widths(hidden_dims: Sequence[int]) -> list[int]:
    hidden_dims = [int(h) for h in hidden_dims]
    require(len(hidden_dims) >= 1 and all(h > 0 for h in hidden_dims), f"bad hidden_dims {hidden_dims}")
    return hidden_dims


class MLP(nn.Module):
    def __init__(
        self, in_dim: int, out_dim: int, hidden_dims: Sequence[int] = (256, 256), activation: str = "relu"
    ):
        super().__init__()
        widths = [in_dim, *_check_widths(hidden_dims)]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NoiseConditionedMLP(nn.Module):
    """s(z, k) = head(h_L) / σ_k with h_l = act(W_l h_{l−1} + b_l) ⊙ e_l[k].

    Each noise level k is an integer token embedded into one vector per hidden layer that multiplies that
    layer's output (a level-dependent mask, paper C.2). The 1/σ_k output scaling (NCSNv2) lets the network
    predict unit-scale targets at every level; it is applied here and nowhere else (`divide_by_sigma`).
    `out_dim` (default: dim) lets the same network regress other level-dependent quantities, such as the
    smoothed distance of the data-distance estimator.
    """

    sigmas: torch.Tensor

    def __init__(
        self,
        dim: int,
        sigmas: Sequence[float] | torch.Tensor,
        hidden_dims: Sequence[int] = (512, 512, 512),
        activation: str = "silu",
        out_dim: int | None = None,
        divide_by_sigma: bool = True,
    ):
        super().__init__()
        hidden_dims = _check_widths(hidden_dims)
        self.divide_by_sigma = divide_by_sigma
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
        self.register_buffer("sigmas", sigmas.clone())
        widths = [dim, *hidden_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.level_embeddings = nn.ModuleList(nn.Embedding(len(sigmas), h) for h in hidden_dims)
        for emb in self.level_embeddings:
            nn.init.ones_(emb.weight)  # start as a plain MLP; levels specialise during training
        self.activation = make_activation(activation)
        self.head = nn.Linear(widths[-1], dim if out_dim is None else int(out_dim))

    def forward(self, z: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """z: (..., dim), level: integer tensor broadcastable to z's leading shape."""
        level = torch.as_tensor(level, device=z.device, dtype=torch.long).expand(z.shape[:-1])
        h = z
        for layer, emb in zip(self.layers, self.level_embeddings, strict=True):
            h = self.activation(layer(h)) * emb(level)
        out = self.head(h)
        return out / self.sigmas[level].unsqueeze(-1) if self.divide_by_sigma else out
