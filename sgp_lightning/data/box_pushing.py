"""Box-pushing demonstrations (paper C.4: ~100 demonstrations, ~750 transitions) and their log file format.

Log format (`.npz`, what `save_log` writes and `load_log` reads; a real robot's logs in this layout work too):

    x        float (N, 12)  state before the step: 5 markers (x₁, y₁, …, x₅, y₅), then the pusher (x, y), cm
    u        float (N, 2)   commanded pusher displacement, cm
    x_next   float (N, 12)  state after the step, same layout as x
    episode  int   (N,)     demonstration index of each row (optional; rows of one demonstration in order)

The scripted demonstrator pushes the box towards a random target position: the pusher first goes to the
point behind the box on the line from the target through the box's centre, then pushes along that line
(through the centre, so the box mostly translates) in steps of up to `max_step` cm, with Gaussian action
noise; a demonstration ends when the box is within `tolerance` cm of its target or after `max_steps`.
All demonstrations run as one batch.

    python -m sgp_lightning.data.box_pushing output=demos.npz [num_demos=100] [max_steps=10] [seed=0]
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from sgp_lightning.envs.box_pushing import BoxPushingEnv, rotation
from sgp_lightning.errors import SGPError, require
from sgp_lightning.utils import clean_errors, cli_options, set_threads

LOG_KEYS = ("x", "u", "x_next")


@torch.no_grad()
def demonstrate(
    env: BoxPushingEnv,
    num_demos: int = 100,
    max_steps: int = 10,
    seed: int = 0,
    target_low: tuple[float, float] = (18.0, -12.0),
    target_high: tuple[float, float] = (32.0, 12.0),
    max_step: float = 5.0,
    action_noise: float = 0.3,
    tolerance: float = 1.0,
    contact_tolerance: float = 1.5,
) -> dict[str, torch.Tensor]:
    """Scripted demonstrations as a log dict (x, u, x_next, episode); see the module docstring."""
    require(num_demos > 0 and max_steps > 0, "num_demos and max_steps must be positive")
    require(max_step > 0 and action_noise >= 0, "max_step must be > 0 and action_noise ≥ 0")
    generator = torch.Generator().manual_seed(seed)
    x = env.sample_starts(num_demos, generator)
    low, high = torch.tensor(target_low), torch.tensor(target_high)
    target = low + (high - low) * torch.rand(num_demos, 2, generator=generator)
    half = env.box_size / 2
    standoff = env.pusher_radius + 0.2  # pusher centre this far outside the box face
    active = torch.ones(num_demos, dtype=torch.bool)
    rows: list[dict[str, torch.Tensor]] = []
    for _ in range(max_steps):
        markers, pusher = env.split(x)
        pose = env.pose_of(markers)
        centre = pose[:, :2]
        to_target = target - centre
        distance = to_target.norm(dim=-1, keepdim=True)
        active &= distance[:, 0] > tolerance
        if not active.any():
            break
        direction = to_target / distance
        # The ray from the centre backwards (−direction) leaves the box at `exit` (box frame half sizes).
        back = -(direction[:, None] @ rotation(pose[:, 2]))[:, 0]  # −direction in the box frame
        exit_distance = torch.minimum(
            half[0] / back[:, 0].abs().clamp_min(1e-6), half[1] / back[:, 1].abs().clamp_min(1e-6)
        )
        contact = centre - direction * (exit_distance[:, None] + standoff)
        approach = contact - pusher
        in_contact = approach.norm(dim=-1, keepdim=True) <= contact_tolerance
        push = direction * distance.clamp(max=max_step) + approach  # stay on the line through the centre
        u = torch.where(in_contact, push, approach)
        u = u + action_noise * torch.randn(u.shape, generator=generator)
        u = u * (max_step / u.norm(dim=-1, keepdim=True).clamp_min(max_step))  # at most max_step long
        x_next = env.step(x, u)
        episode = torch.arange(num_demos)
        rows.append({"x": x[active], "u": u[active], "x_next": x_next[active], "episode": episode[active]})
        x = torch.where(active[:, None], x_next, x)
    log = {k: torch.cat([row[k] for row in rows]) for k in (*LOG_KEYS, "episode")}
    order = torch.argsort(log["episode"], stable=True)  # rows of one demonstration together, in order
    return {k: v[order] for k, v in log.items()}


def save_log(path: str | Path, log: dict[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: torch.as_tensor(v).numpy() for k, v in log.items() if k in (*LOG_KEYS, "episode")}
    with path.open("wb") as f:  # a file object, so numpy does not append ".npz" to the name
        np.savez_compressed(f, **arrays)
    return path


def load_log(path: str | Path, state_dim: int = 12, action_dim: int = 2) -> dict[str, torch.Tensor]:
    """Read and validate a log file (module docstring); SGPError names the first problem."""
    path = Path(path)
    require(path.is_file(), f"box-pushing log {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise SGPError(f"box-pushing log {path} is not a readable .npz file ({err})") from None
    missing = [k for k in LOG_KEYS if k not in arrays]
    require(
        not missing, f"box-pushing log {path} is missing {missing}; a log needs {list(LOG_KEYS)} (+ episode)"
    )
    rows = {k: len(arrays[k]) if arrays[k].ndim else 0 for k in (*LOG_KEYS, "episode") if k in arrays}
    require(
        len(set(rows.values())) == 1,
        f"box-pushing log {path}: its arrays have different numbers of rows {rows}",
    )
    n = rows["x"]
    require(n > 0, f"box-pushing log {path} has no rows")
    shapes = {"x": (n, state_dim), "u": (n, action_dim), "x_next": (n, state_dim)}
    for key, shape in shapes.items():
        require(
            arrays[key].shape == shape,
            f"box-pushing log {path}: {key} must have shape {shape} (N rows; 5 markers + pusher = {state_dim} "
            f"values per state, {action_dim} per action), got {arrays[key].shape}",
        )
        require(np.issubdtype(arrays[key].dtype, np.number), f"box-pushing log {path}: {key} is not numeric")
        bad = ~np.isfinite(arrays[key]).all(-1)
        require(
            not bad.any(),
            f"box-pushing log {path}: {int(bad.sum())} rows of {key} have NaN or infinite values "
            f"(first at row {int(np.argmax(bad))})",
        )
    log = {k: torch.as_tensor(arrays[k], dtype=torch.float32) for k in LOG_KEYS}
    if "episode" in arrays:
        require(
            arrays["episode"].shape == (n,) and np.issubdtype(arrays["episode"].dtype, np.integer),
            f"box-pushing log {path}: episode must be N integers, got {arrays['episode'].dtype} {arrays['episode'].shape}",
        )
        log["episode"] = torch.as_tensor(arrays["episode"], dtype=torch.long)
    return log


def check_log_geometry(
    log: dict[str, torch.Tensor], env: BoxPushingEnv, tolerance: float, source: str
) -> None:
    """A log must describe this env's box: marker sets with its pairwise distances (cm, in the order of
    `env.markers`) and a pusher that moved by the commanded u (the planner's known dynamics), both on
    average within `tolerance` cm."""
    states = torch.cat([log["x"], log["x_next"]])
    rigidity = float(env.rigidity_error(states).mean())
    require(
        rigidity <= tolerance,
        f"{source}: its marker sets differ from the box's marker distances by {rigidity:.3g} cm on average "
        f"(tolerance {tolerance:g}); are positions in cm and markers in the order of domain.env.markers?",
    )
    pusher = float((log["x_next"][:, 10:] - log["x"][:, 10:] - log["u"]).norm(dim=-1).mean())
    require(
        pusher <= tolerance,
        f"{source}: the pusher moved {pusher:.3g} cm away from x + u on average (tolerance {tolerance:g}); "
        "the planner assumes x'_pusher = x_pusher + u",
    )


DEFAULTS = {
    "output": None,  # where the .npz log goes (required)
    "num_demos": 100,  # demonstrations, run as one batch
    "max_steps": 10,  # steps per demonstration at most
    "seed": 0,  # start states, targets and action noise
    "marker_noise": 0.0,  # std (cm) of the motion-capture noise on the recorded markers
    "threads": 1,
}


def main(argv: list[str] | None = None) -> int:
    with clean_errors():
        cfg = cli_options(DEFAULTS, argv)
        require(cfg.output is not None, "output= is required (the .npz file to write)")
        set_threads(cfg.threads)
        env = BoxPushingEnv(marker_noise=float(cfg.marker_noise), noise_seed=int(cfg.seed))
        log = demonstrate(env, int(cfg.num_demos), int(cfg.max_steps), int(cfg.seed))
        path = save_log(cfg.output, log)
        summary = {
            "output": str(path), "transitions": len(log["x"]), "demonstrations": int(log["episode"].unique().numel()),
            "seed": int(cfg.seed), "marker_noise": float(cfg.marker_noise),
        }  # fmt: skip
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
