"""Uncertainty penalties added to the planning cost.

The score penalty is the detached surrogate of paper B.1:  −β σ² Σ_t ⟨stopgrad(s(z_t)), z_t⟩, whose gradient
w.r.t. the actions is −β σ² Σ_t (∂z_t/∂u)ᵀ s(z_t), i.e. the gradient of −β σ² Σ_t log p_σ(z_t) (eq. 11–12).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from sgp_lightning.errors import SGPError, require


def parse_beta(beta) -> float:
    """β ≥ 0 as a float; accepts inf / 'inf' / '.inf' for pure data landing (reward dropped)."""
    if isinstance(beta, str):
        text = beta.strip().lower().lstrip("+")
        if text in ("inf", ".inf", "infinity"):
            return math.inf
        try:
            beta = float(text)
        except ValueError:
            raise SGPError(f"planner.beta must be a number ≥ 0 or inf, got {beta!r}") from None
    beta = float(beta)
    require(
        not math.isnan(beta) and beta >= 0,
        f"planner.beta must be ≥ 0 (0 = vanilla MBRL, inf = data landing), got {beta}",
    )
    return beta


class Penalty:
    """An uncertainty penalty added to a plan's task cost: `penalty(states, actions, level) → (B,)`.

    Built by a planner from a `_partial_` config as `Penalty(system, beta)` (the planner's β), so each
    penalty checks, once, that the system has the part it needs. Arguments of `__call__`: states
    (B, T, *state_shape) and actions (B, T, *action_shape) in raw units, and the noise level (an index into
    the score model's schedule) or None for penalties without levels."""

    drops_cost = False  # β = inf: the task cost is left out of the objective
    uses_levels = False  # whether it needs a noise level (annealed by the optimizer)
    gradient_only = False  # its value is a surrogate: only its gradient means something (no CEM)
    rollout_part = "dynamics"  # the system part its rollouts follow ("ensemble": the members' mean)
    schedule = None

    def __call__(self, states: torch.Tensor, actions: torch.Tensor, level: int | None) -> torch.Tensor:
        raise NotImplementedError

    def task_term(self, cost: torch.Tensor) -> torch.Tensor:
        """The task cost (B,) as it enters the objective: zero where β = inf (pure data landing)."""
        return torch.zeros_like(cost) if self.drops_cost else cost


class WeightedPenalty(Penalty):
    """A penalty scaled by β > 0; β = inf drops the task cost and keeps the penalty at weight 1.

    `beta` may also be a sequence of G values, one per group of rows: a batch of B plans is then G
    consecutive groups of B / G rows, group g weighted by beta[g] (a tuning grid, or methods that differ only
    in β, solved as one batch). β = 0, finite β and inf can be mixed; a β = 0 group adds nothing.
    """

    part = ""  # the SGPSystem part the penalty evaluates

    def __init__(self, source, beta: float | str | Sequence):
        """`source`: an SGPSystem (its `part` is used) or the part's model itself; `beta` > 0 or inf, or one
        β ≥ 0 per group of rows."""
        grouped = isinstance(beta, Sequence) and not isinstance(beta, str)
        betas = tuple(parse_beta(b) for b in (beta if grouped else [beta]))
        require(len(betas) > 0, f"{type(self).__name__} needs at least one β")
        require(
            grouped or betas[0] > 0,
            f"{type(self).__name__} needs β > 0; use NoPenalty for vanilla MBRL (β = 0)",
        )
        self.beta = betas if grouped else betas[0]
        self.groups = len(betas)
        self.model = getattr(source, self.part, None) if hasattr(source, "parts") else source
        require(
            self.model is not None,
            f"{type(self).__name__} needs the system's {self.part} model, but model.{self.part} is null",
        )
        # On the model's device, so a captured objective (optimizer.compile) reads no host tensor
        device = _device_of(self.model)
        self._dropped = torch.tensor([math.isinf(b) for b in betas], device=device)
        self.drops_cost = all(math.isinf(b) for b in betas)  # every group drops the task cost
        # float64, so β·σ² is rounded to float32 once, as for a single β (a Python float)
        self.weights = torch.tensor(
            [1.0 if math.isinf(b) else b for b in betas], dtype=torch.float64, device=device
        )
        # Python bools, so branching on them reads no tensor (and a compiled objective has no graph break)
        self.all_active, self.any_active = all(b != 0 for b in betas), any(b != 0 for b in betas)

    def _rows(self, values: torch.Tensor, rows: int, device) -> torch.Tensor:
        """(G,) per-group values → (rows,) per-row values (G consecutive groups of rows / G rows)."""
        require(
            rows % self.groups == 0,
            f"a batch of {rows} plans cannot be split into {self.groups} equal groups (one per β)",
        )
        return values.to(device).repeat_interleave(rows // self.groups)

    def row_weights(self, rows: int, device=None) -> torch.Tensor:
        """(rows,) float64 weight of each row: its group's β, 1 where β = inf, 0 where β = 0."""
        return self._rows(self.weights, rows, device)

    def weighted(self, values: torch.Tensor) -> torch.Tensor:
        """(B,) penalty values times each row's weight."""
        return values * self.row_weights(values.shape[0], values.device).to(values.dtype)

    def task_term(self, cost: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return super().task_term(cost)
        return torch.where(self._rows(self._dropped, cost.shape[0], cost.device), 0.0, cost)


def _device_of(model) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for one without tensors)."""
    tensors = itertools.chain(model.parameters(), model.buffers()) if isinstance(model, nn.Module) else ()
    first = next(iter(tensors), None)
    return first.device if first is not None else torch.device("cpu")


class NoPenalty(Penalty):
    """Vanilla MBRL (β = 0): no uncertainty penalty. Refuses β > 0, which it would silently ignore."""

    def __init__(self, source=None, beta=0.0):
        beta = parse_beta(beta)
        require(
            beta == 0,
            f"penalty NoPenalty with beta={beta} would silently ignore β; use beta=0 or ScorePenalty "
            "(or EnsemblePenalty)",
        )

    def __call__(self, states, actions, level):
        return states.new_zeros(states.shape[0])


class ScorePenalty(WeightedPenalty):
    """β σ² · (negative log-likelihood) of the planned (x_t, u_t) pairs through the system's score model:
    the detached surrogate −β σ² Σ_t ⟨stopgrad(s(z_t)), z_t⟩ (B.1), all T evaluations in one call."""

    part = "score"
    uses_levels = True
    gradient_only = True

    def __init__(self, source, beta):
        super().__init__(source, beta)
        self.schedule = self.model.schedule

    def __call__(self, states, actions, level):
        """`level`: one noise level (int) for every row, or a (B,) tensor of one per row."""
        require(level is not None, "the score penalty needs a noise level")
        z = self.model.normalize_pair(states, actions)  # (B, T, *pair_shape), built inside the graph
        rows = z.shape[0]
        sigma = self.schedule.sigmas.to(z.device).double()[torch.as_tensor(level, device=z.device)]
        weight = self.row_weights(rows, z.device) * sigma.square()  # β σ² per row, in float64
        with torch.no_grad():
            score = self._score(z.detach(), level)
        return -weight.to(z.dtype) * (score * z).flatten(1).sum(1)

    def _score(self, z: torch.Tensor, level) -> torch.Tensor:
        """s(z) of the rows whose β > 0, all T pairs of a row in one batched call; zeros where β = 0."""
        if self.all_active:
            return self.model(z, self._per_pair(level, z))
        score = torch.zeros_like(z)
        if self.any_active:
            rows = self._rows(self.weights != 0, z.shape[0], z.device)
            level = level if isinstance(level, int) else level[rows]
            score[rows] = self.model(z[rows], self._per_pair(level, z[rows]))
        return score

    @staticmethod
    def _per_pair(level, z: torch.Tensor):
        """The level of each (x_t, u_t) pair of z (B, T, *pair_shape): an int shared by all, or from (B,)."""
        return level if isinstance(level, int) else level.view(-1, 1).expand(z.shape[:2])


class EnsemblePenalty(WeightedPenalty):
    """β Σ_t Σ_features Var_k f_k(x_t, u_t): the ensemble's disagreement (MOPO-style uncertainty), in
    normalized units, along a rollout that follows the members' mean (of the first `num_members`, None:
    all; 2 ≤ num_members ≤ the trained ensemble's size).

    `rollout` computes the states and the penalty together, from one ensemble call per step, so planning
    evaluates the K members once per step instead of twice; `__call__` scores given states in one call.
    """

    part = "ensemble"
    rollout_part = "ensemble"

    def __init__(self, source, beta, num_members: int | None = None):
        super().__init__(source, beta)
        check_members(num_members, self.model)
        self.num_members = num_members

    def __call__(self, states, actions, level):
        disagreement = self.model.disagreement(states, actions, self.num_members)
        return self.weighted(disagreement.flatten(1).sum(1))

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, T+1, …) under the members' mean, weighted penalty (B,))."""
        model, states, penalty = self.model, [x0], x0.new_zeros(x0.shape[0])
        for t in range(actions.shape[1]):
            predictions = model.predict_normalized(states[-1], actions[:, t], self.num_members)  # (K, B, …)
            penalty = penalty + model.spread(predictions)
            # to_state is affine in the prediction, so the mean of the states is to_state of the mean.
            states.append(model.to_state(states[-1], actions[:, t], predictions.mean(0)))
        return torch.stack(states, 1), self.weighted(penalty)


class DistancePenalty(WeightedPenalty):
    """β Σ_t d̂_σ(x_t, u_t)² from the learned data-distance estimator (paper C.1) at one fixed level
    (`level`: an index into its schedule; None: the last, smallest σ).

    Equal to the score penalty's −β σ² Σ_t log p_σ up to a constant, but with a value, so zeroth-order
    planners (CEM) can use it; gradient planners can too."""

    part = "distance"

    def __init__(self, source, beta, level: int | None = None):
        super().__init__(source, beta)
        num_levels = self.model.schedule.num_levels
        self.level = num_levels - 1 if level is None else int(level)
        require(
            0 <= self.level < num_levels,
            f"DistancePenalty level must be in [0, {num_levels - 1}] or null (the last), got {level}",
        )

    def __call__(self, states, actions, level):
        z = self.model.normalize_pair(states, actions)  # (B, T, n)
        return self.weighted(self.model(z, self.level).flatten(1).sum(1))


def check_members(num_members: int | None, ensemble) -> None:
    """`num_members` (None: all) must be in [2, the trained ensemble's size]."""
    require(
        num_members is None or 2 <= num_members <= ensemble.num_members,
        f"ensemble_members must be in [2, {ensemble.num_members}] (the trained ensemble's size), "
        f"got {num_members}",
    )
