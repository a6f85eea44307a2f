"""Behaviour policies that generate the offline datasets, stored as small self-contained files.

A policy file is a `torch.save` dict {"format", "config", "state_dict", "metadata"}: the network is rebuilt
from `config` alone, so collecting data needs only torch (stable-baselines3 is needed only to train one;
see `sgp_lightning.data.behaviour`). `metadata` names the env, the training algorithm and step, and the
return measured when the policy was chosen.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from sgp_lightning.errors import SGPError, require

POLICY_FORMAT = "sgp-lightning-policy-v1"
POLICY_DIR = Path(__file__).resolve().parent / "policies"  # the committed behaviour policies


class Policy(nn.Module):
    """Maps a batch of observations (B, n) to actions in [−1, 1]^m and their log-probabilities (B,)."""

    action_dim: int

    def act(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class UniformRandomPolicy(Policy):
    """D4RL's `random` data: actions uniform in the box [−1, 1]^m, whatever the observation."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.action_dim = int(action_dim)

    def act(self, obs, generator=None):
        actions = torch.rand(obs.shape[0], self.action_dim, generator=generator, dtype=obs.dtype) * 2 - 1
        log_prob = torch.full((obs.shape[0],), -self.action_dim * math.log(2.0), dtype=obs.dtype)
        return actions, log_prob


class TanhGaussianPolicy(Policy):
    """A SAC actor: an MLP gives the mean and log-std of a Gaussian whose sample is squashed by tanh.

    `act` samples (D4RL's medium and expert data use actions sampled from the policy); `deterministic`
    returns tanh(mean).
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the clamp stable-baselines3's SAC applies

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.config = {
            "obs_dim": int(obs_dim),
            "action_dim": int(action_dim),
            "hidden_dims": list(hidden_dims),
        }
        self.action_dim = int(action_dim)
        layers, width = [], int(obs_dim)
        for hidden in hidden_dims:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
            width = int(hidden)
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(width, self.action_dim)
        self.log_std = nn.Linear(width, self.action_dim)

    @torch.no_grad()
    def act(self, obs, generator=None, deterministic: bool = False):
        latent = self.latent_pi(obs)
        mean = self.mu(latent)
        log_std = self.log_std(latent).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        noise = (
            torch.zeros_like(mean)
            if deterministic
            else torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        )
        pre_tanh = mean + log_std.exp() * noise
        actions = torch.tanh(pre_tanh)
        # log N(pre_tanh) − Σ log(1 − tanh²), in the numerically stable form.
        gaussian = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        squash = (2 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
        return actions, gaussian - squash

    @classmethod
    def from_sb3_actor(cls, actor) -> TanhGaussianPolicy:
        """Copy the weights of a stable-baselines3 SAC actor (latent_pi MLP, mu, log_std heads)."""
        linears = [m for m in actor.latent_pi if isinstance(m, nn.Linear)]
        policy = cls(linears[0].in_features, actor.mu.out_features, [m.out_features for m in linears])
        state = {
            k: v.detach().cpu().clone() for k, v in actor.state_dict().items() if not k.startswith("features")
        }
        policy.load_state_dict(state)
        return policy


def save_policy(policy: TanhGaussianPolicy, path: str | Path, metadata: dict) -> Path:
    """Save a policy file (plain values and tensors, loadable weights-only), written under a temporary
    name and renamed, so a training killed midway never leaves a half-written snapshot."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": POLICY_FORMAT,
        "config": policy.config,
        "state_dict": policy.state_dict(),
        "metadata": metadata,
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_policy(path: str | Path) -> tuple[TanhGaussianPolicy, dict]:
    """Rebuild a saved policy; returns (policy, metadata)."""
    path = Path(path)
    require(path.is_file(), f"policy file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file
        raise SGPError(f"{path} is not a policy file saved by sgp-lightning ({err})") from err
    require(
        isinstance(payload, dict) and payload.get("format") == POLICY_FORMAT,
        f"{path} is not a policy file saved by sgp-lightning (format {POLICY_FORMAT})",
    )
    policy = TanhGaussianPolicy(**payload["config"])
    policy.load_state_dict(payload["state_dict"])
    return policy.eval(), dict(payload["metadata"])


def committed_policy_path(env: str, level: str) -> Path:
    """The committed behaviour policy for `env` at `level` ('medium' or 'expert')."""
    path = POLICY_DIR / f"{env}_{level}.pt"
    available = sorted(p.stem for p in POLICY_DIR.glob("*.pt"))
    require(
        path.is_file(),
        f"no committed {level} policy for {env}: {path} is missing (available: {available}); "
        f"train one with `python -m sgp_lightning.data.behaviour env={env}`",
    )
    return path
