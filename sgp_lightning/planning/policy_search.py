"""First-order policy search with the score penalty (paper B.5, eq. 36–40).

A feedback policy π_α(x) is trained by backpropagation through the learned dynamics: a batch of initial
states x₁ ~ ρ is rolled out in closed loop (u_t = π_α(x_t), x_{t+1} = f_θ(x_t, u_t)) and Adam minimises
the mean of Σ_t cost_t + penalty, where the penalty is the same detached-score surrogate as SGP's (B.1,
eq. 40), so the gradient reaches α through every (x_t, u_t). The noise level is annealed over the
training iterations as SGP anneals it over a solve.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sgp_lightning.envs import Env, Tasks
from sgp_lightning.errors import require
from sgp_lightning.nets import MLP
from sgp_lightning.planning.evaluate import Evaluation, measure
from sgp_lightning.planning.problem import PlanResult, ShootingProblem


class FeedbackPolicy(nn.Module):
    """u = limit · tanh(MLP(x)), bounded by `limit` per action coordinate (the data's action range)."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dims: list[int], limit: torch.Tensor):
        super().__init__()
        self.net = MLP(state_dim, action_dim, list(hidden_dims), "tanh")
        self.register_buffer("limit", torch.as_tensor(limit, dtype=torch.float32).expand(action_dim).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.limit * torch.tanh(self.net(x))


def closed_loop(step: Callable, policy: nn.Module, x0: torch.Tensor, horizon: int):
    """States (B, T+1, n) and actions (B, T, m) of the policy acting on `step` (learned or true)."""
    states, actions = [x0], []
    for _ in range(horizon):
        actions.append(policy(states[-1]))
        states.append(step(states[-1], actions[-1]))
    return torch.stack(states, 1), torch.stack(actions, 1)


class PolicySearch:
    def __init__(
        self, hidden_dims: list[int] = (64, 64), iterations: int = 500, lr: float = 1e-3, batch_size: int = 256,
        start_level: int = 0, seed: int = 0,
    ):  # fmt: skip
        require(
            iterations > 0 and batch_size > 0 and lr > 0, "iterations, batch_size and lr must be positive"
        )
        self.hidden_dims, self.iterations, self.lr = list(hidden_dims), int(iterations), float(lr)
        self.batch_size, self.start_level, self.seed = int(batch_size), int(start_level), int(seed)

    def train(
        self, problem: ShootingProblem, sample_x0: Callable[[int, torch.Generator], torch.Tensor],
        goal: torch.Tensor, action_limit: torch.Tensor,
    ) -> tuple[FeedbackPolicy, list[float]]:  # fmt: skip
        """`sample_x0(n, generator)` draws initial states from ρ; `goal` (n,) is every rollout's goal.
        Returns the policy and the objective per iteration."""
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        state_dim, action_dim = goal.shape[-1], problem.action_shape[0]
        policy = FeedbackPolicy(state_dim, action_dim, self.hidden_dims, action_limit)
        optimizer = torch.optim.Adam(policy.parameters(), lr=self.lr)
        schedule = getattr(problem.penalty, "schedule", None)
        history = []
        for i in range(self.iterations):
            x0 = sample_x0(self.batch_size, generator)
            states, actions = closed_loop(problem.dynamics, policy, x0, problem.horizon)
            level = schedule.level_at(i, self.iterations, self.start_level) if schedule is not None else None
            cost = problem.cost(states, actions, goal.expand_as(x0))
            objective = cost + problem.penalty(states[:, :-1], actions, level)
            optimizer.zero_grad()
            objective.mean().backward()
            optimizer.step()
            history.append(float(objective.mean()))
        return policy.eval().requires_grad_(False), history


@torch.no_grad()
def evaluate_feedback_policy(method: str, policy: nn.Module, env: Env, tasks: Tasks, model_step: Callable | None = None,
                    seconds: float = 0.0) -> Evaluation:  # fmt: skip
    """A feedback policy on the domain's tasks: closed loop on the true env (the policy acts on the true
    states) and, as its "plan", closed loop on `model_step` (the learned dynamics); without a model the
    plan is the true rollout itself (e.g. behaviour cloning)."""
    true_states, actions = closed_loop(env.step, policy, tasks.x0, env.horizon)
    states = true_states if model_step is None else closed_loop(model_step, policy, tasks.x0, env.horizon)[0]
    plan = PlanResult(actions, states, env.cost(states, actions, tasks.goal))
    return measure(method, plan, true_states, env, tasks.goal, env.cost, seconds)
