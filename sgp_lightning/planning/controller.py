"""Controller: a trained planner in your own control loop (observations in, actions out).

    controller = Controller.from_checkpoint("run/checkpoints/last.ckpt", planner="sgp")
    controller.reset()
    action = controller.act(obs)          # (m,) or (B, m); numpy in → numpy out, torch in → torch out

Every `act` re-plans from the given observations (receding-horizon MPC, paper C.2), warm-started by the
previous plan shifted by one step; the first solve runs the planner's own iterations, later ones
`planner.mpc.iterations`. All B observations are planned in one batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from sgp_lightning.errors import require
from sgp_lightning.planning.planners import Planner, make_planner
from sgp_lightning.planning.problem import PlanResult, frozen


class Controller:
    """Receding-horizon control of a batch of B systems with a trained SGPSystem and a planner.

    Args:
        system: the trained SGPSystem (its device is where planning runs).
        planner: a Planner, or its config (a mapping with `_target_`).
        env: the domain's Env (costs, action normalisation, neutral action); None: `system.make_env()`.
        horizon: planning steps per re-plan (None: planner.mpc.horizon, else planner.horizon, else the env's
            task horizon).
    """

    def __init__(self, system, planner: Planner | Mapping, env=None, horizon: int | None = None):
        self.system, self.planner = system, make_planner(planner)
        self.env = system.make_env() if env is None else env
        self.planner.check(system)
        self.problem = None  # a policy baseline without a dynamics model predicts nothing
        if self.planner.uses_model or system.dynamics is not None:
            self.problem = self.planner.problem(system, self.env, horizon or self.planner.mpc.horizon)
        self.reset()

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        planner: str = "sgp",
        device: str | torch.device = "cpu",
        planner_set: str | None = None,
        **overrides,
    ) -> Controller:
        """A controller for a checkpoint, with planner `planner` (a name in conf/planner/) at the settings of
        the checkpoint's planner set (`planner_set`: another set's name; None: the one recorded at
        training). `overrides` change planner settings, e.g. `beta=3.0` or `optimizer={"iterations": 20}`."""
        from sgp_lightning.models import SGPSystem
        from sgp_lightning.planning.config import planner_config

        system = SGPSystem.load_from_checkpoint(path, map_location=device)
        config = planner_config(planner, planner_set or system.planner_set, overrides)
        return cls(system, config)

    # ---------------------------------------------------------------- state
    def reset(self, batch_size: int | None = None, obs=None) -> None:
        """Forget the previous plan: the next `act` solves from scratch with the planner's own iterations.
        (`batch_size` / `obs` are accepted for symmetry with gym-style loops; the batch is taken from the
        observations each `act` gets.)"""
        self._plan: torch.Tensor | None = None
        self._first = True
        self.last_plan: PlanResult | None = None  # the latest solve (None: none yet, or the BC policy)

    # ---------------------------------------------------------------- acting
    def _as_batch(self, obs) -> tuple[torch.Tensor, bool, bool]:
        """(states (B, *state_shape) on the system's device, whether obs was numpy, whether unbatched)."""
        is_numpy = isinstance(obs, np.ndarray)
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.system.device)
        state_dims = len(self.env.state_shape)
        require(
            x.dim() in (state_dims, state_dims + 1)
            and tuple(x.shape[-state_dims:]) == tuple(self.env.state_shape),
            f"observations must have shape {tuple(self.env.state_shape)} or (B, *{tuple(self.env.state_shape)}), "
            f"got {tuple(x.shape)}",
        )
        single = x.dim() == state_dims
        return (x.unsqueeze(0) if single else x), is_numpy, single

    def _goal(self, goal, x: torch.Tensor) -> torch.Tensor:
        if goal is not None:
            goal = torch.as_tensor(goal, dtype=x.dtype, device=x.device)
            return goal.expand_as(x) if goal.dim() < x.dim() else goal
        # the learned reward has no goal, and a policy (BC, TD3+BC, IQL) needs none
        if self.planner.cost_source == "learned" or not self.planner.uses_model:
            return torch.zeros_like(x)
        return self.env.nominal_goal().to(x).expand_as(x)

    def step(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """One receding-horizon step from states x (B, …) as tensors: the first action of the new plan,
        as planned (before the env's normalisation)."""
        if not self.planner.uses_model:  # a policy baseline (PolicyPlanner)
            return self.planner.act(self.system, x)
        if self._plan is not None and self._plan.shape[0] != x.shape[0]:
            self.reset()  # another batch: a warm start of the old one does not fit
        plan = self.planner.solve(
            self.problem, x, goal, init_actions=self._plan,
            iterations=None if self._first else self.planner.mpc.iterations,
        )  # fmt: skip
        self._first, self.last_plan = False, plan
        if self.planner.mpc.warm_start:
            self._plan = torch.cat([plan.actions[:, 1:], plan.actions[:, -1:]], 1).detach()
        return plan.actions[:, 0]

    def act(self, obs, goal=None):
        """Actions for observations `obs` ((*state_shape) or (B, *state_shape), numpy or torch), towards
        `goal` (like obs; None: the learned reward's, or the domain's nominal goal). Returns the env's
        normalised first action of each new plan, (*action_shape) or (B, *action_shape), in obs's type."""
        x, is_numpy, single = self._as_batch(obs)
        with frozen(self.system):
            u = self.env.normalize_action(self.step(x, self._goal(goal, x))).detach()
        u = u[0] if single else u
        return u.cpu().numpy() if is_numpy else u

    def plan(self, obs, goal=None) -> PlanResult:
        """An open-loop plan over the whole horizon from `obs` (a full solve, no warm start): actions
        (B, T, …), the learned model's states (B, T+1, …) and its cost (B,)."""
        require(self.planner.uses_model, f"planner {self.planner.name} plans nothing (a policy acts)")
        x, _, _ = self._as_batch(obs)
        with frozen(self.system):
            return self.planner.solve(self.problem, x, self._goal(goal, x))

    def run(self, env, x0: torch.Tensor, goal: torch.Tensor, steps: int) -> PlanResult:
        """Execute `steps` actions on a batched torch env (its `step`) from x0 (B, …). Returns the executed
        actions, the learned model's prediction of them from x0 (`states`, `cost_planned`) and, in
        history["true_states"], the states met on the true env."""
        require(steps > 0, f"mpc steps must be positive, got {steps}")
        self.reset()
        x, executed, true_states = x0, [], [x0]
        with frozen(self.system):
            for _ in range(steps):
                u = self.step(x, goal)
                with torch.no_grad():
                    x = env.step(x, u)
                executed.append(u)
                true_states.append(x)
            actions = torch.stack(executed, 1)
            with torch.no_grad():
                states = self.problem.rollout(x0, actions)
                cost_planned = self.problem.cost(states, actions, goal)
        return PlanResult(actions, states, cost_planned, {"true_states": torch.stack(true_states, 1)})
