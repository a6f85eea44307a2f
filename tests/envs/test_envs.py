import torch

from sgp_lightning.envs import IntegratorEnv


def test_single_integrator_and_pit_dynamics():
    env = IntegratorEnv(pit_radius=0.4)
    x = torch.tensor([[0.0, 0.1], [0.9, 0.0]])
    u = torch.tensor([[0.1, 0.1], [-0.1, 0.05]])
    assert torch.allclose(env.step(x, u), torch.tensor([[0.0, 0.1], [0.8, 0.05]]))  # stalled / moved
    assert torch.allclose(IntegratorEnv().step(x, u), x + u)


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
