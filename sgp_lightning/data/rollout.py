"""Roll a policy out in a batch of gymnasium MuJoCo envs and return the arrays in D4RL's layout.

Batching: gymnasium's SyncVectorEnv steps `num_envs` copies (MuJoCo has one model per copy); the policy
acts on all copies in one batched call. Each copy's stream of steps is a sequence of whole episodes
except the last, which the step budget cuts (marked as a timeout, as D4RL marks its cut episodes). The
rows are written copy after copy, so every episode is contiguous.
"""

from __future__ import annotations

import numpy as np
import torch

from sgp_lightning.data.d4rl import INFO_KEYS, open_tail
from sgp_lightning.data.policies import Policy
from sgp_lightning.envs.mujoco import MujocoTask


def make_vector_env(task: MujocoTask, num_envs: int):
    import gymnasium as gym

    return gym.make_vec(
        task.gym_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        # The reset observation replaces the last one at once, and info["final_obs"] keeps the true x'.
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )


def reached_observations(next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """The observations a step of `make_vector_env`'s envs reached, (num_envs, obs_dim): where a copy's
    episode ended (`done`), the final observation from info["final_obs"] instead of its reset one."""
    reached = next_obs.copy()
    if done.any():
        reached[done] = np.stack(info["final_obs"][done])
    return reached


def rollout(
    task: MujocoTask, policy: Policy, num_envs: int, steps_per_env: int, seed: int
) -> dict[str, np.ndarray]:
    """`num_envs × steps_per_env` transitions in D4RL's layout (float32 arrays, bool flags, infos/*)."""
    envs = make_vector_env(task, num_envs)
    generator = torch.Generator().manual_seed(int(seed))
    obs, _ = envs.reset(seed=int(seed))  # copy i is seeded with seed + i
    keys = ("observations", "actions", "next_observations", "rewards", "terminals", "timeouts")
    buffers = {key: [] for key in (*keys, *INFO_KEYS)}
    for _ in range(steps_per_env):
        # The observation's physical state, read before the step (the copies are separate MuJoCo models).
        buffers["infos/qpos"].append(np.stack([env.unwrapped.data.qpos.copy() for env in envs.envs]))
        buffers["infos/qvel"].append(np.stack([env.unwrapped.data.qvel.copy() for env in envs.envs]))
        actions, log_probs = policy.act(torch.as_tensor(obs, dtype=torch.float32), generator)
        actions = actions.numpy().astype(np.float64)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        true_next = reached_observations(next_obs, terminated | truncated, info)
        buffers["observations"].append(obs)
        buffers["actions"].append(actions)
        buffers["next_observations"].append(true_next)
        buffers["rewards"].append(rewards)
        buffers["terminals"].append(terminated)
        buffers["timeouts"].append(truncated)
        buffers["infos/action_log_probs"].append(log_probs.numpy())
        obs = next_obs
    envs.close()
    # (steps, envs, …) → (envs, steps, …) → rows, so each copy's episodes stay contiguous.
    arrays = {key: np.swapaxes(np.stack(value), 0, 1) for key, value in buffers.items()}
    # The budget cuts each copy's last episode: it ends as a timeout (as D4RL marks its cut episodes), and
    # its rows are marked `cut` (not written to files) so statistics of whole episodes can leave it out.
    arrays["cut"] = open_tail(arrays["terminals"] | arrays["timeouts"])
    arrays["timeouts"][:, -1] |= arrays["cut"][:, -1]
    data = {key: value.reshape(num_envs * steps_per_env, *value.shape[2:]) for key, value in arrays.items()}
    for key in ("observations", "actions", "next_observations", "rewards", *INFO_KEYS):
        data[key] = data[key].astype(np.float32)
    data["terminals"] = data["terminals"].astype(bool)
    data["timeouts"] = data["timeouts"].astype(bool)
    return data


def evaluate_policy(task: MujocoTask, policy: Policy, episodes: int, seed: int) -> np.ndarray:
    """Return of one full episode in each of `episodes` seeded env copies, run as one batch."""
    import gymnasium as gym

    max_steps = gym.spec(task.gym_id).max_episode_steps
    data = rollout(task, policy, episodes, max_steps, seed)
    rewards = data["rewards"].reshape(episodes, max_steps)
    ends = (data["terminals"] | data["timeouts"]).reshape(episodes, max_steps)
    first_end = ends.argmax(axis=1)  # every copy ends its first episode within max_steps
    in_first = np.arange(max_steps)[None, :] <= first_end[:, None]
    return (rewards * in_first).sum(axis=1)
