"""K networks of one architecture evaluated in one vectorised call (torch.func.vmap over stacked weights).

The members' parameters are stacked along a new leading axis (K, …) and registered on this module, so
one optimizer trains all members and checkpoints hold them; a weightless copy of one member (on the meta
device) is called functionally under vmap. No Python loop over members anywhere.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from sgp_lightning.errors import require

# vmap runs CPU attention (the U-Net's bottleneck) through torch's per-sample fallback: correct, just slower.
warnings.filterwarnings("ignore", message=".*batching rule for aten::_scaled_dot_product.*")


class _VmapGroupNorm(nn.GroupNorm):
    """GroupNorm from layer_norm over each group: torch's fused kernel has no vmap rule for its layout
    query. A subclass (not a patched method) so the ensemble still pickles, e.g. for ddp_spawn."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.reshape(x.shape[0], self.num_groups, -1)
        y = F.layer_norm(groups, groups.shape[-1:], eps=self.eps).reshape(x.shape)
        if not self.affine:
            return y
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape)


def _swap_group_norms(module: nn.Module, cls: type) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.GroupNorm):
            m.__class__ = cls
    return module


class Ensemble(nn.Module):
    def __init__(self, num_members: int, make_member: Callable[[], nn.Module]):
        super().__init__()
        require(num_members >= 2, f"an ensemble needs at least 2 members, got {num_members}")
        members = [make_member() for _ in range(num_members)]  # construction only: distinct random inits
        params, buffers = stack_module_state(members)
        self.num_members = int(num_members)
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.stacked_params = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in params.values())
        for i, value in enumerate(buffers.values()):
            self.register_buffer(f"stacked_buffer_{i}", value.clone())
        template = _swap_group_norms(copy.deepcopy(members[0]).to("meta"), _VmapGroupNorm)
        self._template = [template]  # a list, so it is not registered (it has no weights to move or save)

    def train(self, mode: bool = True) -> Ensemble:
        super().train(mode)
        self._template[0].train(mode)  # unregistered, so the mode is passed on by hand
        return self

    def _weights(self):
        params = dict(zip(self.param_names, self.stacked_params, strict=True))
        buffers = {n: getattr(self, f"stacked_buffer_{i}") for i, n in enumerate(self.buffer_names)}
        return params, buffers

    def forward(
        self, *inputs: torch.Tensor, stacked: bool = False, num_members: int | None = None, **kwargs
    ) -> torch.Tensor:
        """Every member on the same inputs → (K, …); with `stacked`, input k (leading axis K) goes to
        member k. `num_members` uses only the first members. Keyword arguments go to every member."""
        template = self._template[0]

        def call(params, buffers, *args):
            return functional_call(template, (params, buffers), args, kwargs)

        params, buffers = self._weights()
        if num_members is not None:
            require(
                2 <= num_members <= self.num_members,
                f"num_members must be in [2, {self.num_members}] for this ensemble, got {num_members}",
            )
            params = {n: v[:num_members] for n, v in params.items()}
            buffers = {n: v[:num_members] for n, v in buffers.items()}
        in_dims = (0, 0, *([0 if stacked else None] * len(inputs)))
        return vmap(call, in_dims=in_dims)(params, buffers, *inputs)

    def member(self, index: int) -> nn.Module:
        """A standalone copy of one member (for checks and inspection)."""
        params, buffers = self._weights()
        module = copy.deepcopy(self._template[0]).to_empty(device=self.stacked_params[0].device)
        state = {n: v[index].detach() for n, v in {**params, **buffers}.items()}
        module.load_state_dict(state)
        return _swap_group_norms(module, nn.GroupNorm).train(self.training)  # back to torch's own kernel
