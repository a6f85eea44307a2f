"""The offline-RL baselines (TD3+BC, IQL) against exact answers on small MDPs.

- Critic / value: a one-state-variable chain whose Q and V are known in closed form (self-loops, falls);
  the learned critics (and IQL's expectile value) must approach them.
- Policy: a bandit whose data mixes a good behaviour (actions near the best one) with a bad one; the
  baseline must act near the best action and earn more than behaviour cloning, whose answer here is
  exactly the data's mean action (the minimiser of BC's squared error; the behaviour ignores the state).
"""

from __future__ import annotations

import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.models import IQLModel, TD3BCModel

SMALL = {"hidden_dims": [32, 32]}
BEST_ACTION = 0.5


def fit(model, data: dict[str, torch.Tensor], steps: int, seed: int = 0, lr: float = 3e-3, batch: int = 128):
    """Train a part alone for `steps` Adam steps on random batches of `batch` rows of `data` (seeded)."""
    torch.manual_seed(seed)
    model.set_normalizers(
        {"x": (data["x"].mean(0), data["x"].std(0)), "u": (data["u"].mean(0), data["u"].std(0))}
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = data["x"].shape[0]
    model.train()
    for _ in range(steps):
        rows = torch.randint(n, (batch,), generator=generator)
        loss = model.loss({k: v[rows] for k, v in data.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.after_optimizer_step()
    return model.eval()


def chain(n: int = 4096, seed: int = 0, bonus: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """States x ~ U[−1, 1] that loop onto themselves (x' = x) with reward x + bonus(u) and a fall (done)
    wherever x < 0. Actions: one of len(bonus) values, uniformly (continuous U[−1, 1] without bonus)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    if bonus is None:
        u, r = torch.rand(n, 1, generator=generator) * 2 - 1, x[:, 0]
    else:
        index = torch.randint(len(bonus), (n,), generator=generator)
        u, r = action_grid(len(bonus))[index], x[:, 0] + bonus[index]
    return {"x": x, "u": u, "x_next": x.clone(), "r": r, "done": x[:, 0] < 0}


def away_from_the_fall() -> torch.Tensor:
    """Test states (K, 1) on [−0.95, 0.95] but not within 0.15 of 0, where the exact values jump."""
    x = torch.linspace(-0.95, 0.95, 39).unsqueeze(-1)
    return x[x[:, 0].abs() > 0.15]


def action_grid(k: int) -> torch.Tensor:
    """k evenly spaced actions inside (−1, 1), shape (k, 1)."""
    return (torch.arange(k, dtype=torch.float32) * 2 + 1 - k).div(k).unsqueeze(-1)


def expectile(values: torch.Tensor, tau: float) -> float:
    """The τ-expectile of equally likely values: the root e of τ Σ (v − e)₊ = (1 − τ) Σ (e − v)₊ (bisection)."""
    lo, hi = float(values.min()), float(values.max())
    for _ in range(100):
        e = (lo + hi) / 2
        above, below = (values - e).clamp_min(0).sum(), (e - values).clamp_min(0).sum()
        lo, hi = (e, hi) if tau * above > (1 - tau) * below else (lo, e)
    return (lo + hi) / 2


def bandit(n: int = 4096, seed: int = 0) -> dict[str, torch.Tensor]:
    """One-step episodes (done everywhere), reward 1 − (u − 0.5)²: half the actions near the best one
    (0.5 + 0.1 N(0, 1)), half anywhere in [−1, 0] (the bad behaviour). States x ~ U[−1, 1] play no part."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    good = BEST_ACTION + 0.1 * torch.randn(n, 1, generator=generator)
    bad = -torch.rand(n, 1, generator=generator)
    u = torch.where(torch.rand(n, 1, generator=generator) < 0.5, good, bad).clamp(-1, 1)
    return {
        "x": x,
        "u": u,
        "x_next": x.clone(),
        "r": bandit_reward(u)[:, 0],
        "done": torch.ones(n, dtype=torch.bool),
    }


def bandit_reward(u: torch.Tensor) -> torch.Tensor:
    return 1 - (u - BEST_ACTION) ** 2


def test_td3bc_critics_approach_the_exact_q_of_a_chain():
    """Q(x, u) = x / (1 − γ) where the chain loops (x ≥ 0) and x where it falls, for every action."""
    data = chain()
    model = fit(TD3BCModel(1, 1, discount=0.5, tau=0.2, **SMALL), data, steps=400)
    x = away_from_the_fall().repeat_interleave(5, 0)
    u = torch.linspace(-0.9, 0.9, 5).repeat(x.shape[0] // 5).unsqueeze(-1)
    exact = torch.where(x[:, 0] >= 0, x[:, 0] / 0.5, x[:, 0])
    with torch.no_grad():
        q = model.q_values(x, u)
    assert (q - exact).abs().max() < 0.1, (q - exact).abs().max()  # ignoring γ or done errs by ≥ 0.15


def test_iql_value_and_critics_approach_the_exact_expectile_values():
    """With action bonuses b: V(x) = (x + e_τ(b)) / (1 − γ) where the chain loops and x + e_τ(b) where it
    falls (e_τ the τ-expectile over the data's actions), and Q(x, u) = x + b(u) + γ V(x) (looping)."""
    bonus = torch.tensor([0.0, 1.0, 0.0, 2.0])
    data = chain(bonus=bonus)
    model = fit(IQLModel(1, 1, discount=0.5, tau=0.5, **SMALL), data, steps=600)
    e = expectile(bonus, 0.7)
    assert abs(e - bonus.mean()) > 0.3  # the expectile is not the mean (V off by ≥ 0.3 if τ were ignored)
    x = away_from_the_fall()
    loops = x[:, 0] >= 0
    exact_v = torch.where(loops, (x[:, 0] + e) / 0.5, x[:, 0] + e)
    with torch.no_grad():
        v = model.state_value(x)
        xs, us = x[loops].repeat_interleave(4, 0), action_grid(4).repeat(int(loops.sum()), 1)
        q = model.q_values(xs, us)
    exact_q = xs[:, 0] + bonus.repeat(int(loops.sum())) + 0.5 * (xs[:, 0] + e) / 0.5
    assert (v - exact_v).abs().max() < 0.25, (v - exact_v).abs().max()
    assert (q - exact_q).abs().max() < 0.25, (q - exact_q).abs().max()


@pytest.mark.parametrize(
    "make, steps",
    [(lambda: TD3BCModel(1, 1, **SMALL), 400), (lambda: IQLModel(1, 1, **SMALL), 400)],
    ids=["td3bc", "iql"],
)
def test_policy_picks_the_best_action_of_a_mixed_dataset_and_beats_bc(make, steps):
    data = bandit()
    model = fit(make(), data, steps=steps)
    with torch.no_grad():
        actions = model(torch.linspace(-1, 1, 21).unsqueeze(-1))
    bc_reward = float(bandit_reward(data["u"].mean(0)))  # BC's exact answer: the mean data action
    reward = float(bandit_reward(actions).mean())
    assert (actions - BEST_ACTION).abs().max() < 0.2, actions.flatten()  # BC's mean action is 0.5 away
    assert reward > bc_reward + 0.2, (reward, bc_reward)


def test_td3bc_actor_moves_every_second_step_and_only_through_its_own_loss():
    """The actor's loss leaves the critics without gradient; on the steps between actor updates the actor
    is untouched, and the targets move only after actor steps."""
    data = bandit(n=512)
    model = TD3BCModel(1, 1, tau=0.5, **SMALL)
    model.actor_loss(data).backward()
    assert all(p.grad is None for p in model.critic.parameters())
    assert all(p.grad is not None for p in model.actor.parameters())
    model.zero_grad(set_to_none=True)
    actor, target = model.actor.net[0].weight.clone(), model.critic_target.stacked_params[0].clone()
    fit(model, data, steps=1)  # step 1: critics only
    assert int(model.updates) == 1
    assert torch.equal(model.actor.net[0].weight, actor)
    assert torch.equal(model.critic_target.stacked_params[0], target)
    fit(model, data, steps=1)  # step 2: the actor's turn, then the targets
    assert int(model.updates) == 2
    assert not torch.equal(model.actor.net[0].weight, actor)
    assert not torch.equal(model.critic_target.stacked_params[0], target)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (TD3BCModel, {"policy_delay": 0}, "policy_delay must be a positive integer"),
        (TD3BCModel, {"discount": 1.0}, "discount must be in"),
        (IQLModel, {"expectile": 1.0}, "expectile must be in"),
        (IQLModel, {"tau": 0.0}, "tau must be in"),
        (IQLModel, {"max_action": -1.0}, "max_action must be positive"),
    ],
)
def test_bad_settings_fail_clearly(cls, kwargs, message):
    with pytest.raises(SGPError, match=message):
        cls(3, 2, **kwargs)


def test_switching_the_baselines_on_leaves_the_other_parts_and_the_random_stream_alone():
    """TD3+BC and IQL initialise from a stream of their own: with them on, the other parts get the same
    initial weights and the training that follows draws the same global random numbers, so the committed
    numbers of the other methods do not move when the baselines join a run."""
    from sgp_lightning.models import SGPSystem

    env = {"_target_": "sgp_lightning.envs.IntegratorEnv"}
    parts = {"dynamics": {"hidden_dims": [8]}, "score": {"hidden_dims": [8]}, "policy": {"hidden_dims": [8]}}
    baselines = {"td3bc": {"hidden_dims": [8]}, "iql": {"hidden_dims": [8]}}
    draws = {}
    for label, extra in (("without", {}), ("with", baselines)):
        torch.manual_seed(7)
        system = SGPSystem("pit", [2], [2], env, **parts, **extra)
        draws[label] = (system, torch.rand(5))
    (plain, after_plain), (full, after_full) = draws["without"], draws["with"]
    assert torch.equal(after_plain, after_full)
    for name in parts:
        for a, b in zip(getattr(plain, name).parameters(), getattr(full, name).parameters(), strict=True):
            assert torch.equal(a, b)
    # and the baselines' own weights follow the run's seed
    torch.manual_seed(7)
    again = SGPSystem("pit", [2], [2], env, **parts, **baselines)
    for a, b in zip(full.iql.parameters(), again.iql.parameters(), strict=True):
        assert torch.equal(a, b)
