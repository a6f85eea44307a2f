"""Evaluate a method by seeded episodes in a gymnasium MuJoCo env (the D4RL domains, paper C.2).

A planner runs as MPC: every step it plans T = planner.mpc.horizon actions from the current observations of all episodes in
one batch (warm-started by the previous plan shifted by one), and the first action is executed. The BC
baseline (PolicyPlanner) acts with the system's behaviour-cloning policy. The episodes run as one
batch in a SyncVectorEnv; an episode's return stops counting when it ends (the copy's automatic reset
starts an episode that is ignored), and the loop stops when every episode has ended. The evaluation keeps
each episode's observations, actions, rewards and the planner's predictions (trajectories.npz), and the
learned model's error against the prediction horizon on the observations met.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sgp_lightning.envs.mujoco import MujocoEnv
from sgp_lightning.planning.controller import Controller
from sgp_lightning.planning.planners import GradientPlanner, Planner, StackedGradientPlanner, make_planner
from sgp_lightning.planning.problem import frozen


@dataclass
class EpisodeEvaluation:
    method: str
    returns: np.ndarray  # (episodes,) undiscounted return of each episode
    normalized_scores: np.ndarray  # (episodes,) D4RL-normalised ×100
    lengths: np.ndarray  # (episodes,) steps until the episode ended (or the step limit)
    seconds: float
    steps: int  # control steps run (the longest episode)
    # The episodes as arrays (see `trajectories`); S = steps, NaN after an episode's end.
    seeds: np.ndarray | None = None  # (episodes,) the seed each episode was reset with
    true_states: np.ndarray | None = None  # (episodes, S+1, obs_dim) observations met, the reset one first
    actions: np.ndarray | None = None  # (episodes, S, action_dim) actions sent to the env
    rewards: np.ndarray | None = None  # (episodes, S) the env's rewards
    planned_states: np.ndarray | None = None  # (episodes, S, H+1, obs_dim) each re-plan's predicted states
    model_error_horizon: np.ndarray | None = None  # (K,) see `horizon_errors`
    # the methods run in one stacked batch (`run_episodes_stacked`); None: this method alone
    solved_with: tuple[str, ...] | None = None

    def summary(self) -> dict:
        out = {
            "return_mean": float(self.returns.mean()),
            "return_std": float(self.returns.std()),
            "normalized_score": float(self.normalized_scores.mean()),
            "normalized_score_std": float(self.normalized_scores.std()),
            "episode_length": float(self.lengths.mean()),
            "seconds": self.seconds,
            "seconds_per_step": self.seconds / max(self.steps, 1),
        }
        if self.model_error_horizon is not None:
            out["model_error_horizon"] = self.model_error_horizon.tolist()
        if self.solved_with is not None:
            out["solved_with"] = list(self.solved_with)
        out["per_episode"] = [
            {"return": float(r), "normalized_score": float(s), "length": int(n)}
            for r, s, n in zip(self.returns, self.normalized_scores, self.lengths, strict=True)
        ]
        return out

    def trajectories(self) -> dict[str, np.ndarray]:
        r"""
        The episodes as arrays (trajectories.npz holds them under `<method>/<key>`). E episodes, S control
        steps (the longest episode); entries after an episode's end (t ≥ `lengths[e]`) are NaN.

        Returns:
            `dict[str, np.ndarray]` (floats as float32, in the gymnasium env's units):
            - `seeds` `(E,)` int64: the seed episode e was reset with (`env.reset(seed=seeds[e])`).
            - `lengths` `(E,)` int64: the steps episode e ran (until it ended, or the step limit).
            - `true_states` `(E, S+1, obs_dim)`: the observations met, the reset one first; at the end of an
              episode its final observation (not the next episode's reset one).
            - `actions` `(E, S, action_dim)`: the actions sent to the env (clamped to [−1, 1]).
            - `rewards` `(E, S)`: the env's reward of each step.
            - `planned_states` `(E, S, H+1, obs_dim)`: at each step, the states the planner's model predicted
              for its H-step plan from the current observation (planners that plan with a model; not `bc`).
        """
        arrays = {
            "seeds": self.seeds,
            "lengths": self.lengths.astype(np.int64),
            "true_states": self.true_states,
            "actions": self.actions,
            "rewards": self.rewards,
            "planned_states": self.planned_states,
        }
        return {key: value for key, value in arrays.items() if value is not None}


@torch.no_grad()
def horizon_errors(problem, states: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    r"""
    Model error against the prediction horizon (as mbrl-lib plots it): from every observation met, the model
    predicts K steps of the actions that were executed, and the predictions are compared with the
    observations that followed, in one batched rollout over all episodes and start steps.

    Args:
        problem (`ShootingProblem`):
            The planner's problem; its `rollout` is the model's prediction and its `horizon` gives K.
        states (`torch.Tensor` of shape `(E, S+1, n)`):
            Observations met (NaN after an episode's end).
        actions (`torch.Tensor` of shape `(E, S, m)`):
            Executed actions (NaN after an episode's end).
        lengths (`torch.Tensor` of shape `(E,)`):
            Steps of each episode.

    Returns:
        `np.ndarray` of shape `(K,)`: mean ‖x̂_{t+k} − x_{t+k}‖ over the starts t with t + k ≤ the episode's
        length, for k = 1..K (NaN where no episode is that long), in the env's observation units.
    """
    from sgp_lightning.planning.evaluate import prediction_error

    k_max, (episodes, steps, _) = problem.horizon, actions.shape
    # Windows of K actions and K+1 observations from every start t (padded past the last step).
    u = F.pad(actions.nan_to_num(), (0, 0, 0, k_max - 1)).unfold(1, k_max, 1).transpose(2, 3)
    x = F.pad(states.nan_to_num(), (0, 0, 0, k_max - 1)).unfold(1, k_max + 1, 1).transpose(2, 3)
    predicted = problem.rollout(x[:, :, 0].flatten(0, 1), u.flatten(0, 1))
    errors = prediction_error(predicted, x.flatten(0, 1)).view(episodes, steps, k_max)
    device = states.device
    ahead = torch.arange(steps, device=device)[:, None] + torch.arange(1, k_max + 1, device=device)
    valid = ahead[None] <= lengths.to(device)[:, None, None]  # (E, S, K): t + k within the episode
    return (torch.where(valid, errors, 0.0).sum((0, 1)) / valid.sum((0, 1))).cpu().numpy()


def _after_end(values: np.ndarray, lengths: np.ndarray, last: int) -> np.ndarray:
    """`values` (E, steps, …) as float32 with NaN at steps t > lengths[e] + last − 1 (`last`: 1 for
    observations, which include the one each episode ends in; 0 for per-step values)."""
    out = values.astype(np.float32)
    out[np.arange(out.shape[1])[None, :] >= lengths[:, None] + last] = np.nan
    return out


def run_episodes(
    system,
    env: MujocoEnv,
    planner: Planner | Mapping,
    method: str = "",
    num_episodes: int | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> EpisodeEvaluation:
    """Run `num_episodes` seeded episodes (default: the env's) of at most `max_steps` steps with a
    Controller of `planner` (a Planner or its config); `progress` shows a bar over the control steps.
    The evaluation keeps the episodes' trajectories and the model's error against the prediction horizon."""
    planner = make_planner(planner)
    return _run(system, env, planner, [method or planner.name], num_episodes, max_steps, seed, progress)[0]


def run_episodes_stacked(
    system,
    env: MujocoEnv,
    planners: Sequence[GradientPlanner],
    methods: Sequence[str],
    num_episodes: int | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> list[EpisodeEvaluation]:
    """`run_episodes` for G gradient planners that differ only in β (and start level), as one batch of
    G × E episodes (StackedGradientPlanner): group g runs planners[g] on the same E episode seeds, so its
    episodes are the ones that planner runs alone, up to the float rounding of kernels whose blocking
    depends on the batch size, which closed-loop episodes can amplify (docs/benchmarks.md). The batch
    runs until every group's episodes have ended; each evaluation's `seconds` is the shared run's and
    `solved_with` names the methods of that run."""
    evaluations = _run(
        system, env, StackedGradientPlanner(planners), methods, num_episodes, max_steps, seed, progress
    )
    for evaluation in evaluations:
        evaluation.solved_with = tuple(methods)
    return evaluations


def _run(
    system, env: MujocoEnv, planner: Planner, methods: Sequence[str], num_episodes, max_steps, seed, progress
) -> list[EpisodeEvaluation]:
    """The episodes of `planner` (G = planner.groups groups of rows, one per method), one evaluation each."""
    from tqdm.auto import tqdm

    from sgp_lightning.data.rollout import make_vector_env, reached_observations

    controller = Controller(system, planner, env)
    groups = len(methods)
    episodes = int(num_episodes or env.num_episodes)
    max_steps = int(max_steps or env.episode_steps)
    seed = env.episode_seed if seed is None else int(seed)
    seeds = seed + np.arange(episodes, dtype=np.int64)
    envs = make_vector_env(env.task, groups * episodes)
    obs, _ = envs.reset(seed=[int(s) for s in np.tile(seeds, groups)])  # each group: the same episodes
    returns, lengths = np.zeros(groups * episodes), np.zeros(groups * episodes, dtype=int)
    alive = np.ones(groups * episodes, dtype=bool)
    observed, executed, rewards, plans = [obs], [], [], []
    start, steps = time.perf_counter(), 0
    bar = tqdm(total=max_steps, desc=f"{'+'.join(methods)} episodes", disable=not progress)
    with frozen(system), bar:
        for steps in range(1, max_steps + 1):  # noqa: B007 (steps is reported)
            bar.update()
            x = torch.as_tensor(obs, dtype=torch.float32, device=system.device)
            u = env.normalize_action(
                controller.step(x, torch.zeros_like(x))
            )  # the learned reward has no goal
            action = u.detach().cpu().double().numpy()
            obs, reward, terminated, truncated, info = envs.step(action)
            observed.append(reached_observations(obs, terminated | truncated, info))
            executed.append(action)
            rewards.append(reward)
            if controller.last_plan is not None:
                plans.append(controller.last_plan.states.detach().cpu().numpy())
            returns += reward * alive
            lengths += alive
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    envs.close()
    seconds = time.perf_counter() - start
    states = _after_end(np.stack(observed, 1), lengths, 1)
    actions = _after_end(np.stack(executed, 1), lengths, 0)
    planned = _after_end(np.stack(plans, 1), lengths, 0) if plans else None
    rewards = _after_end(np.stack(rewards, 1), lengths, 0)
    evaluations = []
    for g, method in enumerate(methods):
        rows = slice(g * episodes, (g + 1) * episodes)
        # Trimmed to this group's longest episode (the batch ran as long as any group's).
        group_steps = int(lengths[rows].max())
        errors = None
        if controller.problem is not None:  # the BC policy without a dynamics model predicts nothing
            arrays = [states[rows, : group_steps + 1], actions[rows, :group_steps], lengths[rows]]
            with frozen(system):
                errors = horizon_errors(
                    controller.problem, *[torch.as_tensor(a, device=system.device) for a in arrays]
                )
        evaluations.append(
            EpisodeEvaluation(
                method,
                returns[rows],
                env.task.normalized_score(returns[rows]),
                lengths[rows],
                seconds,
                steps,
                seeds=seeds,
                true_states=states[rows, : group_steps + 1],
                actions=actions[rows, :group_steps],
                rewards=rewards[rows, :group_steps],
                planned_states=None if planned is None else planned[rows, :group_steps],
                model_error_horizon=errors,
            )
        )
    return evaluations
