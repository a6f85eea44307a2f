"""Ground-truth domains as batched torch code. Planning never calls these; evaluation does.

`Env` declares everything the rest of the code (datamodules, planners, callbacks, plots, analysis, plan.py)
uses on an env, so a new domain is one `Env` subclass, one datamodule and one `conf/domain/<d>.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sgp_lightning.errors import SGPError, require


@dataclass
class Tasks:
    r"""
    A batch of planning problems.

    Args:
        x0 (`torch.Tensor` of shape `(B, *state_shape)`):
            Start states, in the domain's state units.
        goal (`torch.Tensor` of shape `(B, *state_shape)`):
            Goal states, passed as `goal` to `Env.stage_cost` / `Env.terminal_cost` / `Env.cost`.
    """

    x0: torch.Tensor
    goal: torch.Tensor

    def __len__(self) -> int:
        return self.x0.shape[0]

    def select(self, index) -> Tasks:
        """The tasks at `index` (an int tensor, a bool mask or a slice), e.g. one rank's share under DDP."""
        return Tasks(self.x0[index], self.goal[index])

    def to(self, device) -> Tasks:
        return Tasks(self.x0.to(device), self.goal.to(device))


class Env:
    r"""
    Batched true dynamics, differentiable cost and task set of one domain.

    A domain subclasses `Env`, sets the attributes below (as class attributes or in `__init__`) and
    implements the methods marked *required*; the others have documented defaults. Costs are costs (lower
    is better); `reward` (−stage cost towards `nominal_goal`) labels datasets. States and actions are
    vectors of `state_dim` / `action_dim` values, or images of `image_shape` for image domains: the env is
    the one place a domain's shapes are written (the model config gets them from the instantiated env).

    Attributes:
        name (`str`):
            Domain name, equal to `name` in `conf/domain/<d>.yaml`; saved in checkpoints.
        state_dim (`int`):
            Size of a state vector (image domains: of the hidden state the images encode). *Required.*
        action_dim (`int`):
            Size of an action vector (image domains: of the hidden control). *Required.*
        image_shape (`tuple[int, int, int]` or `None`, defaults to `None`):
            `(C, H, W)` of the states and actions the planner sees, for domains that plan over images.
        horizon (`int`):
            Steps T of one task (open-loop plan length; the MPC window default). *Required.*
        episodic (`bool`, defaults to `False`):
            `True` for domains evaluated by closed-loop episodes in an external simulator (D4RL) instead
            of open-loop `tasks()`. plan.py and the PlanningCallback then run episodes, and the env also
            sets `num_episodes`, `episode_steps` and `episode_seed` (see `MujocoEnv`).
        num_tasks (`int`, optional):
            Number of tasks `tasks()` returns. Set it in domains whose task set can be resized: plan.py's
            `num_tasks=` and the benchmarks assign it before calling `tasks()`. Left unset (no attribute)
            for domains with a fixed task set.
        task_seed (`int`, optional):
            Seed of a domain's random task set; plan.py's `task_seed=` assigns it. Left unset for domains
            whose tasks are not drawn at random.
        box (`float`, optional):
            Half-width of the square data region `[−box, box]²` of 2-D state domains; the
            ScoreFieldCallback draws its score grid over it and skips domains without it.
    """

    name: str = "env"
    state_dim: int
    action_dim: int
    image_shape: tuple[int, int, int] | None = None
    horizon: int
    episodic: bool = False
    num_tasks: int
    task_seed: int
    box: float
    # Episodic domains only (read by plan.py, the PlanningCallback and planning.episodes).
    num_episodes: int
    episode_steps: int
    episode_seed: int

    def _missing(self, method: str, purpose: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__}.{method} is not implemented: {purpose}")

    # ------------------------------------------------------------------ shapes
    @property
    def state_shape(self) -> tuple[int, ...]:
        r"""
        Shape of one state as the planner and the learned models see it.

        Returns:
            `tuple[int, ...]`: `(state_dim,)` for vector domains, `image_shape` for image domains.
        """
        return self.image_shape or (self.state_dim,)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """As [`~Env.state_shape`], for one action: `(action_dim,)`, or `image_shape` for image domains."""
        return self.image_shape or (self.action_dim,)

    def saved_config(self, config: dict) -> dict:
        r"""
        The env's config as a checkpoint saves it (`SGPSystem.make_env` rebuilds the env from it). Defaults
        to `config` unchanged; an env that infers settings from its data (`OfflineEnv`) writes them in.

        Args:
            config (`dict`):
                The env's resolved Hydra config (plain values, with `_target_`).

        Returns:
            `dict`: plain values that rebuild this env.
        """
        return config

    # ------------------------------------------------------------------ dynamics (required)
    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        One step of the true dynamics, batched (no loop over the batch). *Required.*

        Args:
            x (`torch.Tensor` of shape `(B, *state_shape)`):
                States, in the domain's units.
            u (`torch.Tensor` of shape `(B, *action_shape)`):
                Actions, in the domain's units; the env applies `normalize_action` itself if it has one.

        Returns:
            `torch.Tensor` of shape `(B, *state_shape)`: the next states x'.
        """
        raise self._missing("step", "every domain defines its true dynamics x' = f(x, u)")

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        r"""
        Roll a batch of action sequences out on the true dynamics (a loop over time only).

        Args:
            x0 (`torch.Tensor` of shape `(B, *state_shape)`):
                Start states.
            actions (`torch.Tensor` of shape `(B, T, *action_shape)`):
                Action sequences.

        Returns:
            `torch.Tensor` of shape `(B, T+1, *state_shape)`: x0 followed by the T true next states.
        """
        require(
            actions.dim() == 2 + len(self.action_shape),
            f"actions must be (B, T, *{self.action_shape}), got shape {tuple(actions.shape)}",
        )
        states = [x0]
        for t in range(actions.shape[1]):
            states.append(self.step(states[-1], actions[:, t]))
        return torch.stack(states, 1)

    def normalize_action(self, actions: torch.Tensor) -> torch.Tensor:
        r"""
        The canonical form of proposed actions, applied by the true env and by planners before the learned
        models see them. Defaults to the identity (domains without action constraints).

        Args:
            actions (`torch.Tensor` of shape `(..., *action_shape)`):
                Proposed actions (decision variables of a planner).

        Returns:
            `torch.Tensor` of the same shape: the actions the system would apply (e.g. clamped to the
            actuators' range).
        """
        return actions

    def neutral_action(self) -> torch.Tensor:
        r"""
        The action planners start from, before any initial noise. Defaults to zeros.

        Returns:
            `torch.Tensor` of shape `action_shape`: one action (the planner broadcasts it over (B, T)).
        """
        return torch.zeros(self.action_shape)

    # ------------------------------------------------------------------ cost (required)
    def stage_cost(self, x: torch.Tensor, u: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        r"""
        Running cost c(x_t, u_t) of one step towards `goal`; differentiable in x and u. *Required.*

        Args:
            x (`torch.Tensor` of shape `(..., *state_shape)`):
                States (any leading batch dimensions, e.g. `(B, T)`).
            u (`torch.Tensor` of shape `(..., *action_shape)`):
                Actions, with the same leading dimensions.
            goal (`torch.Tensor` of shape `(..., *state_shape)`):
                Goal states, with the same leading dimensions.

        Returns:
            `torch.Tensor` of shape `(...)`: the cost of each step (lower is better), in the domain's cost
            units.
        """
        raise self._missing("stage_cost", "every domain defines its running cost c(x_t, u_t)")

    def terminal_cost(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        r"""
        Terminal cost c_T(x_T) towards `goal`; differentiable in x. *Required.*

        Args:
            x (`torch.Tensor` of shape `(..., *state_shape)`):
                Final states.
            goal (`torch.Tensor` of shape `(..., *state_shape)`):
                Goal states.

        Returns:
            `torch.Tensor` of shape `(...)`: the terminal cost of each state.
        """
        raise self._missing("terminal_cost", "every domain defines its terminal cost c_T(x_T)")

    def cost(self, states: torch.Tensor, actions: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        r"""
        Total cost of trajectories, Σ_t c(x_t, u_t) + c_T(x_T); differentiable.

        Args:
            states (`torch.Tensor` of shape `(B, T+1, *state_shape)`):
                Planned or true states, x0 first.
            actions (`torch.Tensor` of shape `(B, T, *action_shape)`):
                The actions between them.
            goal (`torch.Tensor` of shape `(B, *state_shape)`):
                One goal per trajectory.

        Returns:
            `torch.Tensor` of shape `(B,)`: the total cost of each trajectory.
        """
        goal_t = goal.unsqueeze(1).expand_as(states[:, :-1])  # (B, T, *state_shape)
        running = self.stage_cost(states[:, :-1], actions, goal_t).sum(1)
        return running + self.terminal_cost(states[:, -1], goal)

    def nominal_goal(self) -> torch.Tensor:
        r"""
        The goal the dataset's reward labels refer to. *Required* (by the default `reward`).

        Returns:
            `torch.Tensor` of shape `state_shape`: one goal state.
        """
        raise self._missing("nominal_goal", "Env.reward labels data with −stage_cost towards it")

    def reward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""
        Reward recorded in datasets and used as the true cost when planners plan with a learned reward
        (`cost_source: learned`). Defaults to −`stage_cost` towards `nominal_goal()`.

        Args:
            x (`torch.Tensor` of shape `(..., *state_shape)`):
                States (any leading batch dimensions).
            u (`torch.Tensor` of shape `(..., *action_shape)`):
                Actions, with the same leading dimensions.

        Returns:
            `torch.Tensor` of shape `(...)`: the reward of each step (higher is better).
        """
        return -self.stage_cost(x, u, self.nominal_goal().to(x).expand_as(x))

    # ------------------------------------------------------------------ tasks and data
    def tasks(self) -> Tasks:
        r"""
        The domain's evaluation tasks, deterministic for given `num_tasks` / `task_seed`. *Required* for
        domains evaluated open loop; episodic domains (`episodic = True`) have none and raise `SGPError`.

        Returns:
            [`Tasks`]: `num_tasks` start states `x0` and goals `goal`, each `(num_tasks, *state_shape)`.
        """
        if self.episodic:
            raise SGPError(
                f"{type(self).__name__} ({self.name}) is episodic: it has no open-loop tasks; evaluate it "
                "with episodes (plan.py and the PlanningCallback run MPC episodes for episodic domains)"
            )
        raise self._missing("tasks", "open-loop domains define the start states and goals to plan")

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        r"""
        Draw states uniformly from the region the dataset covers. Needed by datamodules that draw
        synthetic transitions; domains with recorded data need not implement it.

        Args:
            n (`int`):
                Number of states.
            generator (`torch.Generator`):
                The datamodule's seeded generator (same seed, same states).

        Returns:
            `torch.Tensor` of shape `(n, state_dim)`: states in the domain's units (image domains: hidden
            states, which their datamodule renders).
        """
        raise self._missing("sample_states", "datamodules that draw synthetic transitions need it")

    def sample_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        r"""
        As [`~Env.sample_states`], for actions: `n` actions drawn uniformly from the range the dataset covers,
        `(n, action_dim)` in the domain's units (image domains: hidden controls).
        """
        raise self._missing("sample_actions", "datamodules that draw synthetic transitions need it")

    def in_box(self, x: torch.Tensor) -> torch.Tensor:
        r"""
        Whether states lie in the region the dataset was drawn from. Needed by datamodules that keep only
        transitions ending inside that region (cart-pole).

        Args:
            x (`torch.Tensor` of shape `(..., state_dim)`):
                States.

        Returns:
            `torch.Tensor` of shape `(...)`, bool: `True` inside the data region.
        """
        raise self._missing("in_box", "datamodules that keep transitions inside the data region need it")

    # ------------------------------------------------------------------ evaluation extras (optional)
    def success(self, states: torch.Tensor, goal: torch.Tensor) -> torch.Tensor | None:
        r"""
        Whether each true trajectory solved its task. Defaults to `None` (no success criterion; no success
        rate is reported).

        Args:
            states (`torch.Tensor` of shape `(B, T+1, *state_shape)`):
                True trajectories.
            goal (`torch.Tensor` of shape `(B, *state_shape)`):
                Their goals.

        Returns:
            `torch.Tensor` of shape `(B,)`, bool, or `None`.
        """
        return None

    def outside_data(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor | None:
        r"""
        Per planned step, whether (x_t, u_t) (and x_T) lies outside the region the data was drawn from.
        Defaults to `None` (the domain does not define that region).

        Args:
            states (`torch.Tensor` of shape `(B, T+1, *state_shape)`):
                Planned states.
            actions (`torch.Tensor` of shape `(B, T, *action_shape)`):
                Planned actions.

        Returns:
            `torch.Tensor` of shape `(B, T+1)`, bool, or `None`.
        """
        return None

    def time_in_trap(self, states: torch.Tensor) -> torch.Tensor | None:
        r"""
        Share of a true trajectory's states inside the domain's trap, where the true dynamics differ from
        what the data shows (the pit). Defaults to `None` (no trap).

        Args:
            states (`torch.Tensor` of shape `(B, T+1, *state_shape)`):
                True trajectories.

        Returns:
            `torch.Tensor` of shape `(B,)`, in [0, 1], or `None`.
        """
        return None

    # ------------------------------------------------------------------ plots (optional)
    def positions(self, states: torch.Tensor) -> torch.Tensor:
        r"""
        2-D points to plot states at (plan.png, the PlanningCallback's images). Defaults to the first two
        coordinates.

        Args:
            states (`torch.Tensor` of shape `(..., *state_shape)`):
                States.

        Returns:
            `torch.Tensor` of shape `(..., 2)`: plot coordinates, in the units `draw` labels its axes with.
        """
        return states[..., :2]

    def draw(self, ax) -> None:
        r"""
        Draw the domain's background (data region, obstacles, goals) on a matplotlib axis, in the
        coordinates of `positions`. Defaults to drawing nothing.

        Args:
            ax (`matplotlib.axes.Axes`):
                The axis the trajectories are plotted on.
        """
