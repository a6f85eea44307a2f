"""Uncertainty penalties added to the planning cost.

The score penalty is the detached surrogate of paper B.1:  −β σ² Σ_t ⟨stopgrad(s(z_t)), z_t⟩, whose gradient
w.r.t. the actions is −β σ² Σ_t (∂z_t/∂u)ᵀ s(z_t), i.e. the gradient of −β σ² Σ_t log p_σ(z_t) (eq. 11–12).
"""

from __future__ import annotations

import math

import torch

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
    drops_cost = False  # β = inf: the task cost is left out of the objective
    uses_levels = False  # whether it needs a noise level (annealed by the optimizer)
    gradient_only = False  # its value is a surrogate: only its gradient means something (no CEM)
    schedule = None

    def __call__(self, states: torch.Tensor, actions: torch.Tensor, level: int | None) -> torch.Tensor:
        raise NotImplementedError


class WeightedPenalty(Penalty):
    """A penalty scaled by β > 0; β = inf drops the task cost and keeps the penalty at weight 1."""

    def __init__(self, beta):
        self.beta = parse_beta(beta)
        require(self.beta > 0, f"{type(self).__name__} needs β > 0; use NoPenalty for vanilla MBRL (β = 0)")
        self.drops_cost = math.isinf(self.beta)

    @property
    def weight(self) -> float:
        return 1.0 if self.drops_cost else self.beta


class NoPenalty(Penalty):
    """Vanilla MBRL (β = 0)."""

    def __call__(self, states, actions, level):
        return states.new_zeros(states.shape[0])


class ScorePenalty(WeightedPenalty):
    """β σ² · (negative log-likelihood) of the planned (x_t, u_t) pairs through a learned score model."""

    uses_levels = True
    gradient_only = True

    def __init__(self, score_model, beta: float):
        super().__init__(beta)
        self.score_model = score_model
        self.schedule = score_model.schedule

    def __call__(self, states, actions, level):
        require(level is not None, "the score penalty needs a noise level")
        z = self.score_model.normalize_pair(states, actions)  # (B, T, *pair_shape), built inside the graph
        with torch.no_grad():
            score = self.score_model(z.detach(), level)  # all T evaluations in one batched call
        weight = self.weight * float(self.schedule.sigmas[level]) ** 2
        return -weight * (score * z).flatten(1).sum(1)


class EnsemblePenalty(WeightedPenalty):
    """β Σ_t Σ_features Var_k f_k(x_t, u_t): the ensemble's disagreement (MOPO-style uncertainty), in
    normalized units, along a rollout that follows the members' mean.

    `rollout` computes the states and the penalty together, from one ensemble call per step, so planning
    evaluates the K members once per step instead of twice; `__call__` scores given states in one call.
    """

    def __init__(self, ensemble_model, beta: float, num_members: int | None = None):
        super().__init__(beta)
        self.ensemble_model, self.num_members = ensemble_model, num_members

    def __call__(self, states, actions, level):
        disagreement = self.ensemble_model.disagreement(states, actions, self.num_members)
        return self.weight * disagreement.flatten(1).sum(1)

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, T+1, …) under the members' mean, weighted penalty (B,))."""
        model, states, penalty = self.ensemble_model, [x0], x0.new_zeros(x0.shape[0])
        for t in range(actions.shape[1]):
            predictions = model.predict_normalized(states[-1], actions[:, t], self.num_members)  # (K, B, …)
            penalty = penalty + model.spread(predictions)
            # to_state is affine in the prediction, so the mean of the states is to_state of the mean.
            states.append(model.to_state(states[-1], actions[:, t], predictions.mean(0)))
        return torch.stack(states, 1), self.weight * penalty


class DistancePenalty(WeightedPenalty):
    """β Σ_t d̂_σ(x_t, u_t)² from the learned data-distance estimator (paper C.1) at one fixed level.

    Equal to the score penalty's −β σ² Σ_t log p_σ up to a constant, but with a value, so zeroth-order
    planners (CEM) can use it; gradient planners can too."""

    def __init__(self, distance_model, beta: float, level: int | None = None):
        super().__init__(beta)
        self.distance_model = distance_model
        num_levels = distance_model.schedule.num_levels
        self.level = num_levels - 1 if level is None else int(level)
        require(
            0 <= self.level < num_levels,
            f"planner.distance_level must be in [0, {num_levels - 1}] or null (the last), got {level}",
        )

    def __call__(self, states, actions, level):
        z = self.distance_model.normalize_pair(states, actions)  # (B, T, n)
        return self.weight * self.distance_model(z, self.level).flatten(1).sum(1)


PENALTY_KINDS = ("score", "ensemble", "distance", "none")


def check_penalty(kind: str, beta) -> float:
    """Validate a (penalty kind, β) pair; returns β as a float."""
    beta = parse_beta(beta)
    require(kind in PENALTY_KINDS, f"unknown penalty {kind!r}; choose one of {PENALTY_KINDS}")
    require(
        kind != "none" or beta == 0,
        f"penalty 'none' with beta={beta} would silently ignore β; use beta=0 or penalty=score (or ensemble)",
    )
    return beta


def build_penalty(
    kind: str, beta, system, ensemble_members: int | None = None, distance_level: int | None = None
) -> Penalty:
    """The penalty of a planner config, on an SGPSystem's score, ensemble or distance part."""
    beta = check_penalty(kind, beta)
    if beta == 0:
        return NoPenalty()
    if kind == "distance":
        if system.distance is None:
            raise SGPError(
                "penalty=distance needs a distance estimator, but this system has none (model.distance: null)"
            )
        return DistancePenalty(system.distance, beta, distance_level)
    if kind == "ensemble":
        if system.ensemble is None:
            raise SGPError(
                "penalty=ensemble needs an ensemble, but this system has none (model.ensemble: null)"
            )
        return EnsemblePenalty(system.ensemble, beta, ensemble_members)
    if system.score is None:
        raise SGPError("planner.beta > 0 needs a score model, but this system has none (model.score: null)")
    return ScorePenalty(system.score, beta)
