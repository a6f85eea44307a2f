"""Planners as objects built from config: first-order (Adam with noise annealing, paper B.2), zeroth-order
(the cross-entropy method) and the behaviour-cloning policy baseline.

`conf/planner/<name>.yaml` instantiates one with `_target_`, e.g.

    _target_: sgp_lightning.planning.GradientPlanner
    penalty: {_target_: sgp_lightning.planning.ScorePenalty, _partial_: true}
    beta: 1.0
    optimizer: {iterations: 300, lr: 0.01}

A planner checks its own settings in its constructor and, once, against the system it plans with
(`check(system)`, called by `problem(system, env)`). No other module inspects planner settings.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from sgp_lightning.errors import SGPError, require
from sgp_lightning.planning.penalties import (
    EnsemblePenalty,
    NoPenalty,
    Penalty,
    WeightedPenalty,
    check_members,
    parse_beta,
)
from sgp_lightning.planning.problem import PlanResult, ShootingProblem

COST_SOURCES = ("env", "learned")  # env: the domain's known differentiable cost | learned: −Σ reward model
DYNAMICS_SOURCES = ("model", "ensemble_mean")  # what planned rollouts follow
ACTION_UNITS = ("raw", "normalized")

# Called as monitor(iteration, decision) with the current plan's decision variables (e.g. to record the
# true cost of the plan during the solve, paper Fig. 2F); never changes the solve.
Monitor = Callable[[int, torch.Tensor], None]


def _settings(cls, values: Mapping | None, where: str):
    """A settings dataclass from a mapping, with one clear error for unknown keys."""
    if isinstance(values, cls):
        return values
    require(values is None or isinstance(values, Mapping), f"{where} must be a mapping of settings")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values or {}) - known)
    require(not unknown, f"unknown {where} settings {unknown}; known: {sorted(known)}")
    return cls(**dict(values or {}))


@dataclass(frozen=True)
class MPCSettings:
    """Receding-horizon settings: `horizon` planning steps per re-plan (None: the domain's task horizon),
    `iterations` per re-plan after the first solve (None: the planner's own), and `warm_start` from the
    previous plan shifted by one step."""

    horizon: int | None = None
    iterations: int | None = None
    warm_start: bool = True

    def __post_init__(self):
        require(
            self.horizon is None or (int(self.horizon) == self.horizon and self.horizon > 0),
            f"planner.mpc.horizon must be > 0, got {self.horizon}",
        )
        require(
            self.iterations is None or self.iterations > 0,
            f"mpc iterations must be positive, got {self.iterations}",
        )


class Planner:
    """Plans actions for a batch of tasks through a trained SGPSystem.

    Args:
        name: label in logs and results.
        beta: penalty weight β ≥ 0 (0: vanilla MBRL, inf: pure data landing, the task cost dropped).
        penalty: a factory `penalty(system, beta) → Penalty` (a `_partial_` config such as ScorePenalty);
            ignored (no penalty) when β = 0. None: NoPenalty.
        cost_source: "env" (the domain's known differentiable cost) or "learned" (−Σ reward model).
        horizon: planning steps T of an open-loop plan (None: the domain's task horizon).
        action_units: "raw" or "normalized": step sizes (lr, init_std, CEM std) in units of the data's
            action std.
        normalize_actions: whether the models see `env.normalize_action` of the plan (false: the raw decision
            variables; the true env normalizes either way).
        dynamics: "model" (the dynamics model) or "ensemble_mean" (the mean of the ensemble's members).
        ensemble_members: use only the first K members of the ensemble (None: all).
        mpc: receding-horizon settings (MPCSettings or its mapping).
    """

    uses_model = True  # False for planners that act without a model (the BC policy)

    def __init__(
        self,
        name: str = "planner",
        beta: float | str = 0.0,
        penalty: Callable[..., Penalty] | None = None,
        cost_source: str = "env",
        horizon: int | None = None,
        action_units: str = "raw",
        normalize_actions: bool = True,
        dynamics: str = "model",
        ensemble_members: int | None = None,
        mpc: MPCSettings | Mapping | None = None,
    ):
        self.name, self.beta = str(name), parse_beta(beta)
        self.penalty_factory = penalty or NoPenalty
        require(cost_source in COST_SOURCES, f"planner.cost_source must be one of {COST_SOURCES}")
        require(
            action_units in ACTION_UNITS,
            f"planner.action_units must be raw or normalized, got {action_units!r}",
        )
        require(
            dynamics in DYNAMICS_SOURCES,
            f"planner.dynamics must be one of {DYNAMICS_SOURCES}, got {dynamics!r}",
        )
        require(
            isinstance(normalize_actions, bool),
            f"planner.normalize_actions must be true or false, got {normalize_actions!r}",
        )
        require(
            horizon is None or (int(horizon) == horizon and horizon > 0),
            f"planner.horizon must be > 0, got {horizon}",
        )
        self.cost_source, self.action_units, self.normalize_actions = (
            cost_source,
            action_units,
            normalize_actions,
        )
        self.dynamics, self.ensemble_members = dynamics, ensemble_members
        self.horizon = None if horizon is None else int(horizon)
        self.mpc = _settings(MPCSettings, mpc, "planner.mpc")
        penalty_class = self.penalty_class
        require(
            not (penalty_class is NoPenalty and self.beta > 0),
            f"penalty NoPenalty with beta={self.beta} would silently ignore β; use beta=0 or ScorePenalty "
            "(or EnsemblePenalty)",
        )
        require(
            not (issubclass(penalty_class, EnsemblePenalty) and dynamics == "model"),
            "EnsemblePenalty always rolls out the ensemble's mean: use dynamics=ensemble_mean",
        )

    # ---------------------------------------------------------------- settings
    @property
    def penalty_class(self) -> type:
        """The class the penalty factory builds (a partial's function)."""
        return getattr(self.penalty_factory, "func", self.penalty_factory)

    @property
    def rollout_part(self) -> str:
        """The system part planned rollouts follow: "ensemble" (the members' mean) with an ensemble penalty
        or dynamics=ensemble_mean, otherwise "dynamics"."""
        ensemble = self.dynamics == "ensemble_mean" or self.penalty_class.rollout_part == "ensemble"
        return "ensemble" if ensemble else "dynamics"

    @property
    def has_penalty(self) -> bool:
        """Whether β weighs an uncertainty penalty (False for vanilla's NoPenalty and the BC policy)."""
        return self.uses_model and self.penalty_class is not NoPenalty

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, beta={self.beta}, penalty={self.penalty_class.__name__})"

    def settings(self) -> dict:
        """The constructor arguments that rebuild this planner."""
        return {
            "name": self.name, "beta": self.beta, "penalty": self.penalty_factory,
            "cost_source": self.cost_source, "horizon": self.horizon, "action_units": self.action_units,
            "normalize_actions": self.normalize_actions, "dynamics": self.dynamics,
            "ensemble_members": self.ensemble_members, "mpc": self.mpc,
        }  # fmt: skip

    def stack_key(self) -> tuple | None:
        """Planners with equal keys can be solved together as one batch (`stack_planners`); None: never.
        Only first-order planners whose settings differ at most in β stack (see GradientPlanner)."""
        return None

    # ---------------------------------------------------------------- binding to a system
    def check(self, system) -> None:
        """Refuse, with one clear error, a system this planner cannot plan with (a missing part, a noise
        level outside the score's schedule, more ensemble members than were trained)."""
        try:
            self._check(system)
        except SGPError as err:
            raise SGPError(f"planner {self.name}: {err}") from None

    def _check(self, system) -> None:
        part = self.rollout_part
        require(
            getattr(system, part) is not None, f"planning needs the {part} model, but model.{part} is null"
        )
        if part == "ensemble":
            check_members(self.ensemble_members, system.ensemble)
        require(
            self.cost_source != "learned" or system.reward is not None,
            "cost_source=learned needs a reward model, but model.reward is null",
        )
        self.make_penalty(system)

    def make_penalty(self, system) -> Penalty:
        """The penalty on this system (NoPenalty when β = 0)."""
        if self.beta == 0:
            return NoPenalty()
        try:
            return self.penalty_factory(system, self.beta)
        except TypeError as err:
            raise SGPError(f"penalty {self.penalty_class.__name__}: {err}") from None

    def problem(self, system, env, horizon: int | None = None) -> ShootingProblem:
        """The shooting problem of `horizon` steps (None: planner.horizon, else the env's) on the system's
        learned models; the rollout follows `rollout_part`."""
        self.check(system)
        penalty = self.make_penalty(system)
        plan_cost = _cost_functions(system, env, self.cost_source)[0]
        if self.rollout_part == "ensemble":  # (the BC policy's prediction follows the dynamics model)
            model = system.ensemble
            dynamics = functools.partial(model.mean_prediction, num_members=self.ensemble_members)
        else:
            model = dynamics = system.dynamics
        # normalized: steps (lr, init_std, CEM std) are in units of the data's action std, as the paper's are
        scale = model.action_norm.std.detach() if self.action_units == "normalized" else None
        # Without normalize_actions the models see the raw decision variables, which a plan can push off the
        # data (the failure mode the paper's pixel experiment shows); the true env still normalizes them.
        action_map = env.normalize_action if self.normalize_actions else None
        steps = int(horizon or self.horizon or env.horizon)
        return ShootingProblem(
            dynamics, plan_cost, penalty, steps, env.neutral_action(), scale, action_map=action_map
        )

    def true_cost(self, system, env):
        """The cost of true trajectories, (states (B, T+1, …), actions (B, T, …), goal) → (B,)."""
        return _cost_functions(system, env, self.cost_source)[1]

    # ---------------------------------------------------------------- solving
    @property
    def iterations(self) -> int:
        raise NotImplementedError

    def solve(
        self,
        problem: ShootingProblem,
        x0: torch.Tensor,
        goal: torch.Tensor,
        init_actions: torch.Tensor | None = None,
        iterations: int | None = None,
        monitor: Monitor | None = None,
    ) -> PlanResult:
        """Plan from start states x0 (B, *state_shape) towards goal (B, *state_shape).

        `init_actions` (B, T, *action_shape) warm-starts the solve; `iterations` (None: the planner's own);
        `monitor(iteration, decision)` is called before every iteration. Returns the plan's actions, the
        learned model's states (B, T+1, …) and its task cost (B,)."""
        raise NotImplementedError


def _cost_functions(system, env, cost_source: str):
    """(planning cost on model states, true cost on env states): both (states, actions, goal) -> (B,)."""
    if cost_source == "env":
        return env.cost, env.cost
    reward_model = system.require_part("reward")

    def learned_cost(states, actions, goal):
        return -reward_model(states[:, :-1], actions).sum(1)

    def true_cost(states, actions, goal):
        return -env.reward(states[:, :-1], actions).sum(1)

    return learned_cost, true_cost


def _final_plan(problem: ShootingProblem, x0, goal, decision, history) -> PlanResult:
    with torch.no_grad():
        actions = problem.actions_of(decision.detach())
        states = problem.rollout(x0, actions)
        cost_planned = problem.cost(states, actions, goal)
    return PlanResult(actions, states, cost_planned, history)


def _starting_plan(problem: ShootingProblem, init_actions: torch.Tensor | None, default) -> torch.Tensor:
    """A copy of the warm start, or `default()` without one; its horizon must be the problem's."""
    actions = default() if init_actions is None else init_actions.detach().clone()
    require(
        actions.shape[1] == problem.horizon,
        f"initial actions have horizon {actions.shape[1]}, the problem {problem.horizon}",
    )
    return actions


def _per_task(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → broadcastable against (B, …) `like`."""
    return values.view(-1, *([1] * (like.dim() - 1)))


COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class AdamSettings:
    """`iterations` Adam steps per solve at learning rate `lr` on the actions; the score's noise level walks
    from `start_level` (0 = σ_max) to the last level over the iterations (B.2); initial actions are the
    neutral plan plus `init_std` × N(0, 1) noise (seeded by `seed`); `grad_clip` clips each task's
    gradient norm (None: off).

    `compile` captures each iteration's objective and its gradient with `torch.compile` (None: eager, the
    default): a torch.compile mode, `default`, `reduce-overhead` (CUDA graphs on a GPU) or `max-autotune`;
    `compile_backend` its backend (`inductor`; `aot_eager` captures the graph without generating kernels).
    The plans equal eager ones within float rounding; the first solve pays the compilation (seconds to
    minutes), so it pays off for long MPC runs on a GPU, not for a single short solve on a CPU."""

    iterations: int = 300
    lr: float = 0.01
    start_level: int = 0
    init_std: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    compile: str | None = None
    compile_backend: str = "inductor"

    def __post_init__(self):
        require(self.iterations > 0, f"planner iterations must be positive, got {self.iterations}")
        require(self.lr > 0, f"planner lr must be positive, got {self.lr}")
        require(self.init_std >= 0, f"init_std must be ≥ 0, got {self.init_std}")
        require(
            self.grad_clip is None or self.grad_clip > 0,
            f"grad_clip must be > 0 or null, got {self.grad_clip}",
        )
        require(
            self.compile in COMPILE_MODES,
            f"planner optimizer.compile must be one of {COMPILE_MODES}, got {self.compile!r}",
        )
        require(
            self.compile_backend == "inductor" or self.compile in (None, "default"),
            f"optimizer.compile={self.compile!r} is a mode of the inductor backend, not of "
            f"{self.compile_backend!r}",
        )

    def objective(self, problem: ShootingProblem):
        """problem.objective, or its torch.compile capture (`compile`)."""
        if self.compile is None:
            return problem.objective
        mode = self.compile if self.compile_backend == "inductor" else None
        return torch.compile(problem.objective, mode=mode, backend=self.compile_backend)


class GradientPlanner(Planner):
    """Adam on the action sequence, minimising cost + penalty with σ annealed (SGP when the penalty is the
    score's, paper Alg. 1; vanilla MBRL when β = 0; ensembles + Adam with EnsemblePenalty).

    Args: those of Planner, and `optimizer`: AdamSettings or its mapping."""

    groups = 1  # groups of rows with their own β (StackedGradientPlanner)

    def __init__(self, optimizer: AdamSettings | Mapping | None = None, **settings):
        super().__init__(**settings)
        self.optimizer = _settings(AdamSettings, optimizer, "planner.optimizer")

    @property
    def iterations(self) -> int:
        return self.optimizer.iterations

    def settings(self) -> dict:
        return {**super().settings(), "optimizer": self.optimizer}

    def stack_key(self) -> tuple | None:
        """Everything but the name, β, the penalty of a β = 0 planner (it has none) and the annealing start
        level (per group in a stacked solve); the penalty factory (its function and arguments) separately,
        so `stack_planners` can add β = 0 planners to a group. Penalties other than WeightedPenalty's
        (which take one β per group of rows) never stack."""
        penalty_class = self.penalty_class
        if not (isinstance(penalty_class, type) and issubclass(penalty_class, WeightedPenalty | NoPenalty)):
            return None
        settings = self.settings()
        for key in ("name", "beta", "penalty"):
            settings.pop(key)
        settings["optimizer"] = dataclasses.replace(self.optimizer, start_level=0)
        settings["rollout_part"] = self.rollout_part  # a β = 0 planner's rollout still follows its penalty's
        factory = self.penalty_factory
        penalty = (penalty_class, getattr(factory, "args", ()), getattr(factory, "keywords", {}))
        return tuple(sorted(settings.items(), key=lambda item: item[0])), repr(penalty) if self.beta else None

    def _group_levels(self, schedule, iteration: int, iterations: int) -> list[int] | None:
        """The noise level of each group of rows at `iteration` (None without levels)."""
        if schedule is None:
            return None
        return [schedule.level_at(iteration, iterations, self.optimizer.start_level)]

    def _check(self, system) -> None:
        super()._check(system)
        penalty = self.make_penalty(system)
        if penalty.uses_levels:
            num_levels = penalty.schedule.num_levels
            start = self.optimizer.start_level
            require(
                0 <= start < num_levels,
                f"optimizer.start_level must be in [0, {num_levels - 1}] for the score's {num_levels} "
                f"noise levels, got {start}",
            )

    def initial_actions(self, problem: ShootingProblem, x0: torch.Tensor) -> torch.Tensor:
        actions = problem.neutral_plan(x0)
        if self.optimizer.init_std == 0:
            return actions
        generator = torch.Generator(device=x0.device).manual_seed(self.optimizer.seed)
        noise = torch.randn(actions.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return actions + self.optimizer.init_std * noise * problem.scale_like(actions)

    def solve(self, problem, x0, goal, init_actions=None, iterations=None, monitor=None) -> PlanResult:
        settings = self.optimizer
        iterations = int(iterations or settings.iterations)
        actions = _starting_plan(problem, init_actions, lambda: self.initial_actions(problem, x0))
        # Adam steps in the problem's action units: optimise actions / scale (equal in raw units).
        scale = problem.scale_like(actions)
        steps = (actions / scale).requires_grad_(True)
        optimizer = torch.optim.Adam([steps], lr=settings.lr)
        schedule = problem.penalty.schedule if problem.penalty.uses_levels else None
        objective_of = settings.objective(problem)
        costs, levels = [], []
        diverged_at = torch.full((x0.shape[0],), -1, dtype=torch.long, device=x0.device)  # -1: never
        rows_per_group = x0.shape[0] // self.groups
        for i in range(iterations):
            group_levels = self._group_levels(schedule, i, iterations)
            level = None  # one int while the groups with levels share it, else one per row
            if group_levels is not None:
                used = {lvl for lvl in group_levels if lvl >= 0}  # -1: a β = 0 group (no levels)
                level = used.pop() if len(used) == 1 else torch.tensor(group_levels, device=x0.device)
                if not isinstance(level, int):
                    level = level.clamp_min(0).repeat_interleave(rows_per_group)
                elif settings.compile is not None:  # a tensor, so each new level is data, not a recompile
                    level = torch.full((x0.shape[0],), level, dtype=torch.long, device=x0.device)
            if monitor is not None:
                monitor(i, steps.detach() * scale)
            objective, cost, _ = objective_of(x0, goal, steps * scale, level)
            # The first iteration whose objective is not finite, per task (a diverging lr, a NaN model).
            diverged_at = torch.where(~torch.isfinite(objective.detach()) & (diverged_at < 0), i, diverged_at)
            optimizer.zero_grad(set_to_none=True)
            # Tasks are independent, so the sum's gradient is each task's own gradient.
            objective.sum().backward()
            if settings.grad_clip:
                # Per task, so a task's step never depends on the others in the batch.
                norms = steps.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                steps.grad.mul_(_per_task((settings.grad_clip / norms).clamp(max=1.0), steps))
            optimizer.step()
            # A capture may return every call's outputs in the same buffers (CUDA graphs): keep a copy.
            costs.append(cost.detach().clone() if settings.compile is not None else cost.detach())
            levels.append([-1] * self.groups if group_levels is None else group_levels)
        level_history = torch.tensor(levels)  # (iterations, groups)
        history = {
            "cost": torch.stack(costs),
            "level": level_history[:, 0] if self.groups == 1 else level_history,
            "diverged_at": diverged_at,
        }
        return _final_plan(problem, x0, goal, steps.detach() * scale, history)


class StackedGradientPlanner(GradientPlanner):
    """G gradient planners that differ only in β (and, with a penalty that has noise levels, the annealing
    start level) solved as one batch: a batch of B plans is G consecutive groups of B / G rows, group g
    planned with members[g]'s β and start level (β = 0, finite β and inf mixed). Rows are independent
    (per-row penalty weights, per-task gradient clipping, element-wise Adam), so each group's plan is the
    one its member plans alone on the same B / G tasks, up to the float rounding of kernels whose
    blocking depends on the batch size. Build with `stack_planners`; `split` returns each member's plan.

    Args:
        members: ≥ 2 GradientPlanners with equal `stack_key()` apart from β = 0 members' penalties.
    """

    def __init__(self, members: Sequence[GradientPlanner]):
        require(len(members) >= 2, f"stacking needs at least 2 planners, got {len(members)}")
        penalised = [m for m in members if m.beta > 0]
        template = penalised[0] if penalised else members[0]
        key = template.stack_key()
        require(key is not None, f"planner {template.name} cannot be stacked")
        require(
            all(m.stack_key() is not None and m.stack_key()[0] == key[0] for m in members)
            and all(m.stack_key() == key for m in penalised)
            and (len(penalised) == len(members) or not hasattr(template.penalty_class, "rollout")),
            f"only planners that differ in β (and start level) stack: {[m.name for m in members]}",
        )
        super().__init__(**{**template.settings(), "name": "+".join(m.name for m in members)})
        self.members = tuple(members)
        self.groups = len(members)
        self.betas = tuple(m.beta for m in members)
        # β = 0 groups have no levels: their start level is moot, so they never split a shared level
        self.start_levels = tuple((m if m.beta > 0 else template).optimizer.start_level for m in members)

    def _check(self, system) -> None:
        for member in self.members:
            member.check(system)
        self.make_penalty(system)

    def make_penalty(self, system) -> Penalty:
        """The template's penalty with one β per group (NoPenalty when every β is 0)."""
        if not any(self.betas):
            return NoPenalty()
        try:
            return self.penalty_factory(system, self.betas)
        except TypeError as err:
            raise SGPError(f"penalty {self.penalty_class.__name__}: {err}") from None

    def _group_levels(self, schedule, iteration, iterations):
        if schedule is None:
            return None
        return [
            schedule.level_at(iteration, iterations, start) if beta > 0 else -1
            for start, beta in zip(self.start_levels, self.betas, strict=True)
        ]

    def initial_actions(self, problem: ShootingProblem, x0: torch.Tensor) -> torch.Tensor:
        """Each group starts where its member would on its B / G tasks (the same seeded noise)."""
        first = super().initial_actions(problem, x0[: x0.shape[0] // self.groups])
        return first.repeat(self.groups, *([1] * (first.dim() - 1)))

    def solve(self, problem, x0, goal, init_actions=None, iterations=None, monitor=None) -> PlanResult:
        require(
            x0.shape[0] % self.groups == 0,
            f"a stacked solve of {self.groups} planners needs a batch divisible by {self.groups}, got {x0.shape[0]}",
        )
        return super().solve(problem, x0, goal, init_actions, iterations, monitor)

    def split(self, plan: PlanResult) -> list[PlanResult]:
        """Each member's plan: its group's rows, and its own history (entries are per row along their last
        dimension; "level" has one column per group, -1 where the group has no levels)."""
        rows = plan.actions.shape[0] // self.groups
        parts = []
        for g in range(self.groups):
            take = slice(g * rows, (g + 1) * rows)
            history = {
                key: value[:, g] if key == "level" else value[..., take]
                for key, value in plan.history.items()
            }
            parts.append(PlanResult(plan.actions[take], plan.states[take], plan.cost_planned[take], history))
        return parts


def stack_planners(planners: Sequence[Planner]) -> list[list[int]]:
    """Groups of `planners` (their indices, in order of first appearance) that can be solved as one batch
    with StackedGradientPlanner: gradient planners equal but for β and the start level; a β = 0 planner (no
    penalty) joins the first group of its settings. A planner that stacks with none is a group of its own.
    A penalty with a rollout of its own (the ensemble's) takes no β = 0 member, whose rollout alone follows
    another code path."""
    groups: list[list[int]] = []
    keys: list[tuple] = []  # per group: (settings, penalty of its β > 0 members or None, own rollout)
    for i, planner in enumerate(planners):
        key, zero = planner.stack_key(), planner.beta == 0
        rollout = not zero and hasattr(planner.penalty_class, "rollout")
        match = None
        for g, (settings, penalty, own_rollout) in enumerate(keys):
            if key is None or settings != key[0]:
                continue
            if (zero and not own_rollout) or (
                not zero and (penalty == key[1] or penalty is None and not rollout)
            ):
                match = g
                break
        if match is None:
            groups.append([i])
            keys.append((key and key[0], None if zero or key is None else key[1], rollout))
        else:
            groups[match].append(i)
            if not zero:
                keys[match] = (key[0], key[1], rollout)
    return groups


@dataclass(frozen=True)
class CEMSettings:
    """`iterations` CEM iterations per solve; `population` candidate plans per task and iteration, the
    `elites` best refit the Gaussian; sampling `std` per action coordinate (refit to the elites too with
    `update_std`, floored at `min_std`); at most `max_batch` candidate plans evaluated at once (None: all);
    `seed` seeds the samples."""

    iterations: int = 100
    population: int = 64
    elites: int = 8
    std: float = 0.05
    update_std: bool = True
    min_std: float = 0.0
    max_batch: int | None = None
    seed: int = 0

    def __post_init__(self):
        require(self.iterations > 0, f"CEM iterations must be positive, got {self.iterations}")
        require(self.population >= 2, f"CEM population must be ≥ 2, got {self.population}")
        require(
            0 < self.elites <= self.population,
            f"CEM elites must be in [1, population={self.population}], got {self.elites}",
        )
        require(
            self.std > 0 and self.min_std >= 0,
            f"CEM std must be > 0 and min_std ≥ 0, got {self.std}, {self.min_std}",
        )
        require(
            self.max_batch is None or self.max_batch > 0,
            f"CEM max_batch must be > 0 or null, got {self.max_batch}",
        )


class CEMPlanner(Planner):
    """Cross-entropy method: sample `population` plans around a Gaussian per task, keep the `elites` with
    the lowest objective, refit the mean (and, with `update_std`, the std) to them. The current mean is
    one of the candidates (so a good mean can survive). Zeroth order: the penalty must have a value
    (EnsemblePenalty, DistancePenalty or none); the score's surrogate only has a gradient.

    Args: those of Planner, and `optimizer`: CEMSettings or its mapping."""

    def __init__(self, optimizer: CEMSettings | Mapping | None = None, **settings):
        super().__init__(**settings)
        self.optimizer = _settings(CEMSettings, optimizer, "planner.optimizer")
        require(
            not (self.beta > 0 and self.penalty_class.gradient_only),
            "CEMPlanner cannot use the score penalty (its surrogate has a gradient but no value); use "
            "EnsemblePenalty, DistancePenalty or none with CEM",
        )

    @property
    def iterations(self) -> int:
        return self.optimizer.iterations

    @torch.no_grad()
    def _objective(self, problem: ShootingProblem, x0, goal, candidates):
        """Objective and task cost of (B, P, T, …) candidates, evaluated in chunks of ≤ max_batch plans."""
        batch, population = candidates.shape[:2]
        flat = candidates.flatten(0, 1)
        x0 = x0.repeat_interleave(population, 0)
        goal = goal.repeat_interleave(population, 0)
        chunk = self.optimizer.max_batch or flat.shape[0]
        parts = [
            problem.objective(x0[i : i + chunk], goal[i : i + chunk], flat[i : i + chunk], None)[:2]
            for i in range(0, flat.shape[0], chunk)
        ]
        objective = torch.cat([p[0] for p in parts]).view(batch, population)
        cost = torch.cat([p[1] for p in parts]).view(batch, population)
        return objective, cost

    def solve(self, problem, x0, goal, init_actions=None, iterations=None, monitor=None) -> PlanResult:
        require(  # a problem built by hand can still carry one
            not problem.penalty.gradient_only,
            "CEM needs a penalty with a value (EnsemblePenalty, DistancePenalty or none); the score penalty "
            "only provides gradients, so plan with GradientPlanner instead",
        )
        settings = self.optimizer
        iterations = int(iterations or settings.iterations)
        mean = _starting_plan(problem, init_actions, lambda: problem.neutral_plan(x0))
        std = torch.full_like(mean, settings.std) * problem.scale_like(
            mean
        )  # `std` is in the problem's units
        generator = torch.Generator(device=x0.device).manual_seed(settings.seed)
        costs, best_objectives = [], []
        for i in range(iterations):
            if monitor is not None:
                monitor(i, mean)
            noise = torch.randn(
                (mean.shape[0], settings.population - 1, *mean.shape[1:]),
                generator=generator, device=mean.device, dtype=mean.dtype,
            )  # fmt: skip
            candidates = torch.cat([mean.unsqueeze(1), mean.unsqueeze(1) + std.unsqueeze(1) * noise], 1)
            objective, cost = self._objective(problem, x0, goal, candidates)
            order = objective.argsort(dim=1)[:, : settings.elites]
            index = order.view(*order.shape, *([1] * (mean.dim() - 1))).expand(-1, -1, *mean.shape[1:])
            elites = candidates.gather(1, index)
            costs.append(cost.gather(1, order[:, :1]).squeeze(1))
            best_objectives.append(objective.gather(1, order[:, :1]).squeeze(1))
            mean = elites.mean(1)
            if settings.update_std:
                std = torch.maximum(
                    elites.std(1, unbiased=False), settings.min_std * problem.scale_like(mean)
                )
        history = {"cost": torch.stack(costs), "objective": torch.stack(best_objectives)}
        return _final_plan(problem, x0, goal, mean, history)


class PolicyPlanner(Planner):
    """A policy baseline: acts step by step with one of the system's policy parts, nothing is planned:
    behaviour cloning (`policy`, model.policy), TD3+BC (`td3bc`) or IQL (`iql`). Its `problem` only
    predicts, with the dynamics model, where executed actions lead (cost_planned of a closed-loop run).

    Args:
        name: label in logs and results.
        cost_source: as in Planner (how the predicted cost is computed).
        policy: the system part that acts (a part whose class sets `acts`).
    """

    uses_model = False
    LABELS = {"policy": "the BC policy", "td3bc": "the TD3+BC policy", "iql": "the IQL policy"}

    def __init__(self, name: str = "bc", cost_source: str = "env", policy: str = "policy"):
        super().__init__(name=name, cost_source=cost_source)
        self.policy = str(policy)

    @property
    def rollout_part(self) -> str:
        return self.policy

    def _check(self, system) -> None:
        label = self.LABELS.get(self.policy, f"policy {self.policy!r}")
        part = getattr(system, self.policy, None)
        require(part is not None, f"{label} needs model.{self.policy}, but it is null")
        require(getattr(part, "acts", False), f"model.{self.policy} is not a policy part")

    def act(self, system, x: torch.Tensor) -> torch.Tensor:
        """The policy's actions for states x (B, *state_shape), in the data's units (B, *action_shape)."""
        return getattr(system, self.policy)(x)

    def problem(self, system, env, horizon=None) -> ShootingProblem:
        require(
            system.dynamics is not None, f"planner {self.name}: predicting its actions needs model.dynamics"
        )
        return super().problem(system, env, horizon)


def make_planner(config) -> Planner:
    """A Planner from its config (a mapping with `_target_`, as in conf/planner/), or the planner itself."""
    if isinstance(config, Planner):
        return config
    import hydra
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    require(
        isinstance(config, Mapping) and "_target_" in config,
        f"a planner config needs a _target_ (e.g. sgp_lightning.planning.GradientPlanner), got {config!r}",
    )
    try:
        planner = hydra.utils.instantiate(config, _convert_="all")
    except Exception as err:  # noqa: BLE001 - Hydra wraps the constructor's error; report the cause
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, SGPError):
            raise SGPError(f"planner {config.get('name', '')}: {cause}") from None
        raise SGPError(f"planner {config.get('name', '')} ({config['_target_']}): {cause}") from None
    require(isinstance(planner, Planner), f"{config['_target_']} is not a Planner")
    return planner
