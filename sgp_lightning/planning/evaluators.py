"""Evaluators: how a domain's planners are measured on its true system. One interface, two kinds:

- `OpenLoopTasks`: plan the domain's tasks in one batch (open loop, or MPC on the batched torch env) and
  compare the cost of the plan under the learned model with the cost the same actions achieve.
- `MPCEpisodes`: run seeded closed-loop episodes in an external simulator (gymnasium MuJoCo, D4RL) with a
  Controller and report return and D4RL-normalised score.
- `HeldOutEpisodes`: no simulator (`domain=offline`): measure models and plans against an offline
  dataset's held-out episodes.

The domain config chooses one (`evaluator: {_target_: sgp_lightning.planning.MPCEpisodes}`, default
OpenLoopTasks); the checkpoint records it. plan.py, the PlanningCallback and reproduce call `evaluate` once
per planner, and `write_results` writes results.json, table.md, trajectories.npz and the figures (and
MuJoCo videos) for either kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from sgp_lightning.errors import SGPError, require
from sgp_lightning.planning.evaluate import Evaluation, plan_and_evaluate, plan_and_evaluate_stacked
from sgp_lightning.planning.planners import Planner, stack_planners


def _positive(name: str, value) -> int | None:
    require(value is None or int(value) > 0, f"{name} must be positive, got {value}")
    return None if value is None else int(value)


class Evaluator:
    """Evaluates planners on a domain's true system.

    `evaluate(system, env, planner, method, rank, world_size)` runs one planner on this rank's share of
    the evaluation (tasks or episodes) and returns an evaluation with `summary()`; `metric_sums` gives the
    sums (and the count) that a multi-process run adds up to get the `plan/*` means; `table` formats the
    per-method summaries as markdown; `describe` is what results.json says of the evaluation."""

    plan_options: dict[str, str] = {}  # plan.py's option names → this evaluator's argument names

    def evaluate(self, system, env, planner: Planner, method: str = "", rank: int = 0, world_size: int = 1):
        raise NotImplementedError

    # evaluate_all: planners that differ only in β as one batched evaluation (`evaluate_stacked`)
    stack = False

    def evaluate_all(self, system, env, planners: Mapping[str, Planner], seed: int = 0, **shared) -> list:
        """Every planner (method name → Planner) on the same evaluation, each after torch.manual_seed(seed);
        with `stack`, the gradient planners that differ only in β (`stack_planners`) as one batch each.
        `shared` goes to every `evaluate` and `evaluate_stacked` call."""
        names = list(planners)
        groups = stack_planners(list(planners.values())) if self.stack else [[i] for i in range(len(names))]
        evaluations = {}
        for group in self._groups_progress(groups):
            torch.manual_seed(seed)
            methods = [names[i] for i in group]
            members = [planners[m] for m in methods]
            if len(group) == 1:
                evaluations[methods[0]] = self.evaluate(system, env, members[0], methods[0], **shared)
            else:
                stacked = self.evaluate_stacked(system, env, members, methods, **shared)
                evaluations.update(zip(methods, stacked, strict=True))
        return [evaluations[name] for name in names]

    def evaluate_stacked(self, system, env, planners: list[Planner], methods: list[str], **shared) -> list:
        """Planners that differ only in β evaluated as one batch, one evaluation per method (with `stack`)."""
        raise NotImplementedError

    def _groups_progress(self, groups: list[list[int]]):
        """The groups of `evaluate_all`, behind a progress bar where the evaluator shows one."""
        return groups

    def metric_sums(self, evaluation) -> dict:
        """{metric: sum over this rank's tasks or episodes (a number or 0-d tensor)} and "count"."""
        raise NotImplementedError

    def table(self, methods: Mapping[str, Mapping]) -> str:
        raise NotImplementedError

    def describe(self, env, evaluations: list) -> dict:
        raise NotImplementedError

    def headline(self, system, env, evaluations: list) -> str:
        """One line that says what was evaluated (printed above the table)."""
        raise NotImplementedError

    def figures(self, env, evaluations: list, methods: Mapping[str, Mapping], out: Path) -> None:
        """Figures of the evaluation (none by default)."""


class OpenLoopTasks(Evaluator):
    """The domain's task set, planned in one batch: open loop (`mpc` false), or MPC on the batched torch env.

    Args:
        mpc: re-plan every step on the true env (the planner's `mpc` settings) instead of one open-loop plan.
        num_tasks: evaluate this many tasks instead of the env's (domains with a seeded task set).
        task_seed: draw a fresh task set with this seed (to check settings tuned on another set).
        track_true_cost_every: record the true cost of each open-loop plan every k iterations (Fig. 2F).
        progress: show a progress bar over the methods of `evaluate_all`.
        stack: in `evaluate_all`, solve the open-loop plans of gradient planners that differ only in β (and
            the start level), e.g. sgp, vanilla and data_landing, as one batched solve (the same plans up to
            float rounding; each method's `seconds` is then the shared solve's). False: one solve each.
    """

    # plan.py's options (conf/plan.yaml) → this evaluator's arguments
    plan_options = {"mpc": "mpc", "num_tasks": "num_tasks", "task_seed": "task_seed",
                    "track_true_cost_every": "track_true_cost_every", "progress": "progress",
                    "stack_methods": "stack"}  # fmt: skip

    def __init__(
        self,
        mpc: bool = False,
        num_tasks: int | None = None,
        task_seed: int | None = None,
        track_true_cost_every: int | None = None,
        progress: bool = False,
        stack: bool = True,
    ):
        self.mpc, self.progress = bool(mpc), bool(progress)
        # MPC stays one solve per method: a stochastic env would draw other noise for a bigger batch
        self.stack = bool(stack) and not self.mpc
        self.num_tasks = _positive("num_tasks", num_tasks)
        self.task_seed = None if task_seed is None else int(task_seed)
        self.track_true_cost_every = _positive("track_true_cost_every", track_true_cost_every)

    def tasks(self, env, rank: int = 0, world_size: int = 1):
        """This rank's share of the domain's tasks (tasks[rank::world_size])."""
        if self.num_tasks is not None:
            require(hasattr(env, "num_tasks"), f"domain {env.name!r} has a fixed task set (no num_tasks)")
            env.num_tasks = self.num_tasks
        if self.task_seed is not None:
            require(hasattr(env, "task_seed"), f"domain {env.name!r} has a fixed task set (no task_seed)")
            env.task_seed = self.task_seed
        tasks = env.tasks()
        return tasks if world_size == 1 else tasks.select(slice(rank, None, world_size))

    def evaluate_all(self, system, env, planners, seed=0) -> list:
        return super().evaluate_all(system, env, planners, seed, tasks=self.tasks(env))  # tasks drawn once

    def evaluate_stacked(self, system, env, planners, methods, tasks=None):
        return plan_and_evaluate_stacked(system, env, tasks, planners, methods, self.track_true_cost_every)

    def _groups_progress(self, groups):
        from tqdm.auto import tqdm

        return tqdm(groups, desc="plan", disable=not self.progress)

    def evaluate(
        self, system, env, planner, method="", rank=0, world_size=1, tasks=None
    ) -> Evaluation | None:
        """`tasks`: evaluate these instead of this rank's share of the domain's."""
        tasks = self.tasks(env, rank, world_size) if tasks is None else tasks
        if len(tasks) == 0:
            return None
        return plan_and_evaluate(
            system, env, tasks, planner, mpc=self.mpc, method=method,
            track_true_cost_every=self.track_true_cost_every,
        )  # fmt: skip

    def metric_sums(self, evaluation) -> dict:
        metrics = ("cost_planned", "cost_achieved", "model_error")
        if evaluation is None:
            return {**dict.fromkeys(metrics, 0.0), "count": 0.0}
        return {
            **{m: getattr(evaluation, m).sum() for m in metrics},
            "count": float(len(evaluation.cost_planned)),
        }

    def table(self, methods):
        from sgp_lightning.report import methods_table

        return methods_table(methods)

    def describe(self, env, evaluations):
        return {"mpc": self.mpc, "num_tasks": len(evaluations[0].cost_planned)}

    def headline(self, system, env, evaluations):
        return (
            f"{system.domain}: {len(evaluations[0].cost_planned)} tasks, {'MPC' if self.mpc else 'open loop'}"
        )

    def figures(self, env, evaluations, methods, out):
        from sgp_lightning.plotting import plot_convergence, plot_image_rollouts, plot_plans, save_figure

        if env.state_dim >= 2:
            save_figure(plot_plans(env, evaluations), out / "plan.png")
            if env.image_shape is not None:
                save_figure(plot_image_rollouts(evaluations), out / "image_rollouts.png")
        if any("true_cost" in ev.plan.history for ev in evaluations):
            save_figure(plot_convergence(methods), out / "convergence.png")


class MPCEpisodes(Evaluator):
    """Seeded closed-loop episodes in the domain's gymnasium env, all run as one batch (D4RL, paper C.2).

    Args:
        num_episodes: episodes per planner (None: the env's `num_episodes`).
        episode_steps: step limit per episode (None: the env's `episode_steps`).
        seed: episode i resets with seed + i (None: the env's `episode_seed`); under DDP each rank's
            episodes continue the seeds of the ranks before it.
        progress: show a progress bar over each planner's control steps.
        video: `figures` also writes an mp4 of each planner's first episode (`sgp_lightning.video`).
        stack: in `evaluate_all`, run the episodes of gradient planners that differ only in β (and the start
            level), e.g. a β sweep, as one batch of G × E episodes on the same seeds (`run_episodes_stacked`;
            each method's `seconds` is then the shared run's). Off by default: matrix kernels round by the
            batch size and closed-loop episodes amplify it, so a method's episodes would depend on which
            other methods run beside it (docs/benchmarks.md).
    """

    # plan.py's options → this evaluator's arguments (episodes always re-plan every step, so `mpc` is moot)
    plan_options = {
        "num_tasks": "num_episodes",
        "episode_steps": "episode_steps",
        "task_seed": "seed",
        "progress": "progress",
        "video": "video",
        "stack_episodes": "stack",
    }

    def __init__(
        self,
        num_episodes: int | None = None,
        episode_steps: int | None = None,
        seed: int | None = None,
        progress: bool = False,
        video: bool = False,
        stack: bool = False,
    ):
        self.progress, self.video, self.stack = bool(progress), bool(video), bool(stack)
        self.num_episodes = _positive("num_tasks (episodes)", num_episodes)
        self.episode_steps = _positive("episode_steps", episode_steps)
        self.seed = None if seed is None else int(seed)

    def _episodes(self, env, rank: int = 0, world_size: int = 1) -> dict:
        """This rank's share of the episodes: their number, first seed, step limit and progress bar."""
        per_rank = math.ceil((self.num_episodes or env.num_episodes) / world_size)
        seed = (env.episode_seed if self.seed is None else self.seed) + rank * per_rank
        return {
            "num_episodes": per_rank,
            "max_steps": self.episode_steps,
            "seed": seed,
            "progress": self.progress,
        }

    def evaluate(self, system, env, planner, method="", rank=0, world_size=1):
        from sgp_lightning.planning.episodes import run_episodes

        return run_episodes(system, env, planner, method=method, **self._episodes(env, rank, world_size))

    def evaluate_stacked(self, system, env, planners, methods):
        from sgp_lightning.planning.episodes import run_episodes_stacked

        return run_episodes_stacked(system, env, planners, methods, **self._episodes(env))

    def metric_sums(self, evaluation) -> dict:
        return {
            "return": float(evaluation.returns.sum()),
            "normalized_score": float(evaluation.normalized_scores.sum()),
            "count": float(len(evaluation.returns)),
        }

    def table(self, methods):
        from sgp_lightning.report import episodes_table

        return episodes_table(methods)

    def describe(self, env, evaluations):
        return {
            "env": env.task.gym_id,
            "num_episodes": len(evaluations[0].returns),
            "episode_steps": int(self.episode_steps or env.episode_steps),
        }

    def headline(self, system, env, evaluations):
        return f"{system.domain} ({env.task.gym_id}, D4RL-normalised): {len(evaluations[0].returns)} episodes"

    def figures(self, env, evaluations, methods, out):
        if self.video:
            from sgp_lightning.video import write_episode_videos

            write_episode_videos(env, evaluations, out / "videos")


class HeldOutEpisodes(Evaluator):
    """An offline dataset's held-out episodes, no simulator (`domain=offline`; sgp_lightning.planning.held_out):
    model error against the prediction horizon, each plan's distance to the training data (exact and
    smoothed) and its predicted return beside the data's. With the env's `gym_id` it also runs MPC episodes
    in that gymnasium env (as `MPCEpisodes`).

    Args:
        num_tasks: held-out states planned from (seeded by `seed`).
        max_windows: held-out windows the model-error curve averages over (at most).
        seed: which held-out states and windows.
        num_episodes, episode_steps: the gymnasium episodes (None: the env's); only with a gym_id.
        progress: show a progress bar over the methods and each episode's control steps.
    """

    plan_options = {"num_tasks": "num_tasks", "task_seed": "seed", "episode_steps": "episode_steps",
                    "progress": "progress"}  # fmt: skip

    def __init__(
        self,
        num_tasks: int = 16,
        max_windows: int = 1000,
        seed: int = 0,
        num_episodes: int | None = None,
        episode_steps: int | None = None,
        progress: bool = False,
    ):
        self.num_tasks, self.max_windows = (
            _positive("num_tasks", num_tasks),
            _positive("max_windows", max_windows),
        )
        self.seed, self.progress = int(seed), bool(progress)
        self.episodes = MPCEpisodes(num_episodes, episode_steps, progress=progress)

    def evaluate(self, system, env, planner, method="", rank=0, world_size=1):
        from sgp_lightning.planning.held_out import evaluate_held_out

        evaluation = evaluate_held_out(
            system, env, planner, method, self.num_tasks, self.max_windows, self.seed, rank, world_size
        )
        if evaluation is not None and env.gym_id is not None:
            evaluation.episodes = self.episodes.evaluate(system, env, planner, method, rank, world_size)
        return evaluation

    def metric_sums(self, evaluation) -> dict:
        # Per-task means, and the model-error curve's mean (the same on every rank) weighted by the task count.
        names = ("predicted_return", "data_return", "model_error", "distance_exact", "distance_smoothed_sq")
        if evaluation is None:
            return {**dict.fromkeys(names, 0.0), "count": 0.0}
        count = float(len(evaluation.predicted_return))
        sums = {
            "predicted_return": evaluation.predicted_return.sum(),
            "data_return": evaluation.data_return.sum(),
            "model_error": evaluation.model_error_horizon.mean() * count,
        }
        if evaluation.distance_exact is not None:
            sums["distance_exact"] = evaluation.distance_exact.sum()
            sums["distance_smoothed_sq"] = evaluation.distance_smoothed_sq.sum()
        if evaluation.episodes is not None:
            sums["return"] = float(evaluation.episodes.returns.mean()) * count
            sums["normalized_score"] = float(evaluation.episodes.normalized_scores.mean()) * count
        return {**sums, "count": count}

    def table(self, methods):
        from sgp_lightning.report import held_out_table

        return held_out_table(methods)

    def describe(self, env, evaluations):
        return {
            "dataset": env.dataset,
            "horizon": len(evaluations[0].model_error_horizon),
            "num_tasks": len(evaluations[0].predicted_return),
            **({"env": env.gym_id} if env.gym_id is not None else {}),
        }

    def headline(self, system, env, evaluations):
        return (
            f"{system.domain} ({env.dataset}): {len(evaluations[0].predicted_return)} held-out states, "
            f"horizon {len(evaluations[0].model_error_horizon)}"
        )


def make_evaluator(
    config: Mapping | None, overrides: Mapping | None = None, plan_options: Mapping | None = None
):
    """An Evaluator from its config (a mapping with `_target_`; None: OpenLoopTasks), with `overrides` of its
    arguments and `plan_options` (plan.py's num_tasks, task_seed, mpc, episode_steps, track_true_cost_every,
    translated by the evaluator's `plan_options`; those it has no use for, or left None, are ignored)."""
    import hydra

    config = dict(config or {"_target_": "sgp_lightning.planning.OpenLoopTasks"})
    cls = hydra.utils.get_class(config["_target_"])
    require(isinstance(cls, type) and issubclass(cls, Evaluator), f"{config['_target_']} is not an Evaluator")
    config.update(overrides or {})
    for option, value in (plan_options or {}).items():
        if value is not None and option in cls.plan_options:
            config[cls.plan_options[option]] = value
    settings = {key: value for key, value in config.items() if key != "_target_"}
    try:
        return cls(**settings)
    except TypeError as err:
        raise SGPError(f"evaluator {cls.__name__}: {err}") from None


def reduce_metrics(evaluator: Evaluator, evaluation, reduce, device=None) -> dict[str, float]:
    """`plan/<metric>` means over every rank's tasks or episodes: the sums (float32, on `device`) are
    added up over ranks by `reduce` (the identity in a single process)."""
    sums = evaluator.metric_sums(evaluation)
    names = [k for k in sums if k != "count"]
    values = [torch.as_tensor(sums[k], dtype=torch.float32, device=device) for k in [*names, "count"]]
    totals = reduce(torch.stack(values))
    means = (totals[:-1] / totals[-1]).tolist()
    return {f"plan/{name}": value for name, value in zip(names, means, strict=True)}


def write_results(out: Path, payload: dict, evaluator: Evaluator, env, evaluations: list) -> str:
    """results.json, table.md, trajectories.npz (each evaluation's `trajectories()` under
    `<method>/<key>`), model_error_horizon.png and the evaluator's figures in `out`; returns the table."""
    import numpy as np

    from sgp_lightning.utils import write_json, write_text

    out = Path(out)
    write_json(out / "results.json", payload)
    np.savez_compressed(out / "trajectories.npz", **{
        f"{ev.method}/{key}": array for ev in evaluations for key, array in ev.trajectories().items()
    })  # fmt: skip
    if any("model_error_horizon" in m for m in payload["methods"].values()):
        from sgp_lightning.plotting import plot_model_error_horizon, save_figure

        save_figure(plot_model_error_horizon(payload["methods"]), out / "model_error_horizon.png")
    evaluator.figures(env, evaluations, payload["methods"], out)
    table = evaluator.table(payload["methods"])
    write_text(out / "table.md", table + "\n")
    return table
