"""The Env protocol (required methods, documented defaults, episodic domains), every shipped domain's env,
and the integrator's dynamics and cost."""

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.envs import Env, IntegratorEnv, MujocoEnv, Tasks
from tests.conftest import CONF, compose_config

DOMAINS = sorted(p.stem for p in (CONF / "domain").glob("*.yaml") if p.stem != "mujoco")  # mujoco: a base


class Bare(Env):
    name, state_dim, action_dim, horizon = "bare", 3, 2, 5


@pytest.mark.parametrize(
    "method, args",
    [
        ("step", (torch.zeros(1, 3), torch.zeros(1, 2))),
        ("stage_cost", (torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, 3))),
        ("terminal_cost", (torch.zeros(1, 3), torch.zeros(1, 3))),
        ("nominal_goal", ()),
        ("tasks", ()),
        ("sample_states", (4, torch.Generator())),
        ("sample_actions", (4, torch.Generator())),
        ("in_box", (torch.zeros(1, 3),)),
    ],
)
def test_required_methods_name_the_class_and_method(method, args):
    with pytest.raises(NotImplementedError, match=f"Bare.{method} is not implemented"):
        getattr(Bare(), method)(*args)


def test_optional_methods_have_their_documented_defaults():
    env = Bare()
    states, actions = torch.randn(4, 6, 3), torch.randn(4, 5, 2)
    assert env.state_shape == (3,) and env.action_shape == (2,) and env.image_shape is None
    assert env.episodic is False and not hasattr(env, "num_tasks") and not hasattr(env, "task_seed")
    assert torch.equal(env.normalize_action(actions), actions)
    assert torch.equal(env.neutral_action(), torch.zeros(2))
    assert torch.equal(env.positions(states), states[..., :2])
    assert env.success(states, states[:, 0]) is None and env.time_in_trap(states) is None
    assert env.outside_data(states, actions) is None and env.draw(None) is None


def test_episodic_domain_says_to_use_episodes():
    env = MujocoEnv("hopper", "hopper")
    assert env.episodic and env.state_shape == (11,) and env.action_shape == (3,)
    for call in (env.tasks, lambda: env.step(torch.zeros(1, 11), torch.zeros(1, 3)), env.nominal_goal):
        with pytest.raises(SGPError, match="episodic.*Evaluate it with episodes"):
            call()
    with pytest.raises(SGPError, match="episodes"):
        env.cost(torch.zeros(1, 6, 11), torch.zeros(1, 5, 3), torch.zeros(1, 11))
    with pytest.raises(SGPError, match="no open-loop tasks; evaluate it with episodes"):
        type("Episodic", (Bare,), {"episodic": True})().tasks()  # the Env default for episodic domains


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_shipped_domain_builds_an_env_with_its_shapes(domain, tmp_path: Path):
    overrides = [f"domain={domain}"]
    if domain == "offline":  # your own data: the shapes come from the file it is pointed at
        from tests.domains.test_offline import linear_arrays

        np.savez(tmp_path / "own.npz", **linear_arrays())
        overrides.append(f"domain.env.dataset={tmp_path / 'own.npz'}")
    cfg = compose_config("train", overrides, tmp_path)
    env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
    assert isinstance(env, Env) and env.name == cfg.domain.name and env.horizon > 0
    assert all(isinstance(n, int) and n > 0 for n in (*env.state_shape, *env.action_shape))
    if env.episodic:
        return
    tasks = env.tasks()
    assert isinstance(tasks, Tasks) and len(tasks) == env.num_tasks
    assert tasks.x0.shape[1:] == env.state_shape and tasks.goal.shape == tasks.x0.shape
    assert env.neutral_action().shape == env.action_shape


def test_single_integrator_and_pit_dynamics():
    env = IntegratorEnv(pit_radius=0.4)
    x = torch.tensor([[0.0, 0.1], [0.9, 0.0]])
    u = torch.tensor([[0.1, 0.1], [-0.1, 0.05]])
    assert torch.allclose(env.step(x, u), torch.tensor([[0.0, 0.1], [0.8, 0.05]]))  # stalled / moved
    assert torch.allclose(IntegratorEnv().step(x, u), x + u)


def test_integrator_tuning_tasks_are_seeded_and_not_the_tables():
    table = IntegratorEnv().tasks().x0
    assert torch.allclose(table[:, 1], torch.linspace(-0.3, 0.3, 8))  # evenly spaced, as the tables plan
    tuning = IntegratorEnv(task_seed=1).tasks().x0
    assert torch.equal(tuning, IntegratorEnv(task_seed=1).tasks().x0)
    assert not torch.equal(tuning, IntegratorEnv(task_seed=2).tasks().x0)
    assert torch.all(tuning[:, 0] == -0.8) and tuning[:, 1].abs().max() <= 0.3
    assert torch.cdist(tuning, table).min() > 1e-4  # no tuning start is one of the table's


def test_rollout_is_batched_and_cost_is_differentiable():
    env = IntegratorEnv(horizon=4, num_tasks=5)
    tasks = env.tasks()
    assert tasks.x0.shape == (5, 2) and torch.all(tasks.goal == env.goal)
    actions = torch.zeros(5, 4, 2, requires_grad=True)
    states = env.rollout(tasks.x0, actions)
    assert states.shape == (5, 5, 2)
    cost = env.cost(states, actions, tasks.goal)
    cost.sum().backward()
    assert actions.grad.abs().sum() > 0
    expected = 4 * env.state_weight * (tasks.x0 - tasks.goal).square().sum(-1) + env.terminal_weight * (
        tasks.x0 - tasks.goal
    ).square().sum(-1)
    assert torch.allclose(cost, expected)
