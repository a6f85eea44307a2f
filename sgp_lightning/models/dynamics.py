"""Learned dynamics x' = f_θ(x, u), trained by regression in normalized space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from sgp_lightning.errors import require
from sgp_lightning.models.base import Batch, OptimizerFactory, StateActionModel, build_network
from sgp_lightning.normalization import Normalizer
from sgp_lightning.spaces import is_image, stats_shape


class DynamicsModel(StateActionModel):
    r"""
    Learned dynamics x' = f_θ(x, u): an MLP (vectors) or U-Net (images) on normalized (x, u), regressing the
    normalized next state, or with `residual` the normalized x' − x, by mean squared error.

    `known_increments` lists [i, j] pairs of coordinates whose dynamics are known, x'_i = x_i + u_j (e.g. a
    pusher that goes where it is commanded, paper C.4): they are computed, not learned, and the network
    predicts only the other coordinates.

    Args:
        state_shape, action_shape (`int` or `list[int]`):
            `[n]` for vector states and actions, `[C, H, W]` for images (see [`StateActionModel`]).
        architecture (`str`, *optional*, defaults to `"mlp"`):
            `mlp` (vectors) or `unet` (images).
        hidden_dims (`Sequence[int]`, *optional*, defaults to `(256, 256)`):
            The MLP's hidden layer widths.
        activation (`str`, *optional*, defaults to `"relu"`):
            The MLP's activation: `relu`, `silu`, `tanh`, `elu` or `gelu`.
        residual (`bool`, *optional*, defaults to `True`):
            Predict x' − x instead of x'.
        unet (`Mapping`, *optional*):
            The U-Net's settings (`block_out_channels`, `layers_per_block`, `norm_num_groups`, `attention`,
            `attention_head_dim`), for `architecture="unet"`.
        known_increments (`Sequence[Sequence[int]]`, *optional*):
            `[state index, action index]` pairs with x'_i = x_i + u_j (vector states only; not all states).
        optimizer (`OptimizerFactory`, *optional*):
            As in [`PartModel`].
    """

    part_name = "dynamics"

    def __init__(
        self,
        state_shape,
        action_shape,
        architecture: str = "mlp",
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        residual: bool = True,
        unet: Mapping | None = None,
        known_increments: Sequence[Sequence[int]] | None = None,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(state_shape, action_shape, optimizer)
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.residual = residual
        self._set_known_increments(known_increments)
        self.target_norm = Normalizer(stats_shape(self.output_shape))  # of x' − x if residual, else of x'
        self.net = self.build_net(architecture, hidden_dims, activation, unet)

    def _set_known_increments(self, pairs) -> None:
        pairs = [tuple(int(v) for v in pair) for pair in (pairs or [])]
        if not pairs:
            self.learned_dims, self.output_shape = None, self.state_shape
            return
        require(
            not is_image(self.state_shape), "model.dynamics.known_increments needs vector states, not images"
        )
        n, m = self.state_shape[0], self.action_shape[0]
        require(
            all(len(p) == 2 and 0 <= p[0] < n and 0 <= p[1] < m for p in pairs),
            f"model.dynamics.known_increments must be [state index, action index] pairs within ({n}, {m}), "
            f"got {pairs}",
        )
        known = [p[0] for p in pairs]
        require(
            len(set(known)) == len(known) < n,
            f"known_increments repeats a state index or covers all: {pairs}",
        )
        self.learned_dims = [i for i in range(n) if i not in known]
        self.output_shape = (len(self.learned_dims),)
        self.known_state, self.known_action = known, [p[1] for p in pairs]
        # state coordinate i sits at position inverse[i] of cat([learned, known])
        order = torch.tensor(self.learned_dims + known)
        self.register_buffer("state_order", torch.argsort(order), persistent=False)

    def build_net(self, architecture, hidden_dims, activation, unet):
        r"""
        The network from normalized (x, u) to the learned coordinates' normalized target (arguments as in
        the class). [`EnsembleDynamicsModel`] overrides it to stack K of them.

        Returns:
            `nn.Module`: `(…, *input_shape) → (…, *output_shape)`.
        """
        return build_network(architecture, self.input_shape, self.output_shape, hidden_dims, activation, unet)

    def learned_part(self, values: torch.Tensor) -> torch.Tensor:
        r"""
        The coordinates the network predicts (all of them without `known_increments`).

        Args:
            values (`torch.Tensor` of shape `(…, n)`):
                Values per state coordinate (states, or their statistics).

        Returns:
            `torch.Tensor` of shape `(…, learned)`: the learned coordinates; `values` itself without
            `known_increments`.
        """
        return values if self.learned_dims is None else values[..., self.learned_dims]

    def set_normalizers(self, stats) -> None:
        """Reads `x`, `u` and the target's statistics: `dx` with `residual`, else `x_next`."""
        super().set_normalizers(stats)
        mean, std = stats["dx" if self.residual else "x_next"]
        self.target_norm.set_stats(self.learned_part(mean), self.learned_part(std))

    def predict_normalized(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        The network's output: the normalized target (x' − x with `residual`, else x').

        Args:
            x, u (`torch.Tensor`):
                States and actions, as in [`~StateActionModel.normalized_input`].

        Returns:
            `torch.Tensor` of shape `(…, *output_shape)`: in normalized target units.
        """
        return self.net(self.normalized_input(x, u))

    def to_state(self, x: torch.Tensor, u: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        r"""
        Next states from the network's normalized prediction: denormalized, plus x with `residual`, with the
        known increments filled in.

        Args:
            x, u (`torch.Tensor`):
                States and actions, as in [`~StateActionModel.normalized_input`].
            prediction (`torch.Tensor` of shape `(…, *output_shape)`):
                The network's output; extra leading dims (e.g. an ensemble's members `K`) broadcast over x
                and u.

        Returns:
            `torch.Tensor` of shape `(…, *state_shape)`: next states in the data's units, with
            `prediction`'s leading dims.
        """
        out = self.target_norm.denormalize(prediction)
        learned = self.learned_part(x) + out if self.residual else out
        if self.learned_dims is None:
            return learned
        known = x[..., self.known_state] + u[..., self.known_action]
        lead = torch.broadcast_shapes(learned.shape[:-1], known.shape[:-1])
        learned, known = learned.expand(*lead, -1), known.expand(*lead, -1)
        return torch.cat([learned, known], -1)[..., self.state_order]

    def target(self, batch: Batch) -> torch.Tensor:
        r"""
        The regression target of a batch.

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x` and `x_next` `(B, *state_shape)`.

        Returns:
            `torch.Tensor` of shape `(B, *output_shape)`: the normalized x' − x (`residual`) or x' of the
            learned coordinates.
        """
        raw = batch["x_next"] - batch["x"] if self.residual else batch["x_next"]
        return self.target_norm(self.learned_part(raw))

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        The predicted next state.

        Args:
            x, u (`torch.Tensor`):
                States and actions, as in [`~StateActionModel.normalized_input`].

        Returns:
            `torch.Tensor` of shape `(…, *state_shape)`: next states in the data's units.
        """
        return self.to_state(x, u, self.predict_normalized(x, u))

    def loss(self, batch: Batch, generator=None) -> torch.Tensor:
        r"""
        Mean squared error of the normalized prediction against [`~DynamicsModel.target`].

        Args:
            batch (`dict[str, torch.Tensor]`):
                Transitions; reads `x`, `u` and `x_next`.
            generator (`torch.Generator`, *optional*):
                Unused (the loss draws no noise).

        Returns:
            `torch.Tensor`: the scalar loss, in normalized target units squared (mean over batch and
            coordinates).
        """
        return (self.predict_normalized(batch["x"], batch["u"]) - self.target(batch)).square().mean()
