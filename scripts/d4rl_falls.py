"""How and why a method's D4RL episodes end early (docs/results.md, walker2d section): read the episodes a
reproduction planned and, for every episode that fell, say which health limit it crossed and whether the
planner's own model saw it coming.

    python scripts/d4rl_falls.py TRAJECTORIES.npz --env walker2d [--methods sgp bc] [--before 50]
        [--output falls.json]

TRAJECTORIES.npz is what plan.py writes beside results.json for D4RL domains (e.g.
DIR/runs/medium_expert/seed_0/plan/methods/trajectories.npz of `python reproduce.py d4rl_walker2d_small`); it
holds each method's observations, actions and, for planners, every re-plan's predicted states. The health
limits are gymnasium's own (`Walker2d-v5`, `Hopper-v5`): the torso height z = obs[0] and its pitch = obs[1]
(positive: leaning forward, the walking direction) must stay inside open ranges, or the episode terminates.
Per method it prints:
- `fell`: episodes that ended outside the limits, and the step they ended at;
- `cause`: which limit the final observation crossed (height low/high, pitch forward/backward);
- `foreseen`: of the falls, how many the model predicted: some re-plan of the last H steps (H = the plan
  horizon) put a predicted state outside the limits; unforeseen falls are the model's error, foreseen ones are
  falls the planner's objective accepted or could no longer avoid (each fall's `warning_steps` says how many
  steps before the end the first such re-plan came);
- `plans_predicting_a_fall`: over all re-plans, the share whose predicted states leave the limits;
- `pitch` and `forward_velocity` (obs[VELOCITY_INDEX]), mean over every step of every episode and over the
  `--before` steps before each fall (how the walker moved as it fell).
The JSON holds the same plus each fall's step, cause and predicted-versus-true height and pitch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# The forward velocity's index in the observation (qpos without x, then qvel); the healthy ranges come from the
# env itself (`limits`).
VELOCITY_INDEX = {"walker2d": 8, "hopper": 5}
GYM_ID = {"walker2d": "Walker2d-v5", "hopper": "Hopper-v5"}


def limits(env_name: str) -> np.ndarray:
    """(2, 2) [[z_min, z_max], [pitch_min, pitch_max]]: the env's healthy ranges on obs[0] and obs[1]."""
    if env_name not in GYM_ID:
        sys.exit(f"error: --env must be one of {sorted(GYM_ID)} (halfcheetah never terminates)")
    import gymnasium as gym

    env = gym.make(GYM_ID[env_name]).unwrapped
    return np.array([env._healthy_z_range, env._healthy_angle_range], dtype=float)


CAUSES = ["height below", "height above", "pitched backward", "pitched forward"]


def crossed_limits(states: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(…, 4) which limit a state (…, obs_dim) is past, in the order of CAUSES (NaN: none)."""
    z_pitch = states[..., :2]
    below, above = z_pitch <= bounds[:, 0], z_pitch >= bounds[:, 1]  # (…, 2) each: height, pitch
    return np.stack([below[..., 0], above[..., 0], below[..., 1], above[..., 1]], -1)


def outside(states: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(…,) True where a state (…, obs_dim) has its height or pitch outside the healthy ranges (NaN: False)."""
    return crossed_limits(states, bounds).any(-1)


def causes(final: np.ndarray, bounds: np.ndarray) -> list[str]:
    """The limit each final observation (F, obs_dim) crossed, the first of CAUSES ("none" if within them)."""
    crossed = crossed_limits(final, bounds)
    first = np.where(crossed.any(1), crossed.argmax(1), len(CAUSES))
    return np.array([*CAUSES, "none"])[first].tolist()


def method_falls(
    arrays: dict[str, np.ndarray], bounds: np.ndarray, velocity_index: int, before: int = 50
) -> dict:
    """The fall account of one method's episodes (`arrays`: its keys of trajectories.npz); `before`: how many
    steps before each fall the pitch and velocity are averaged over."""
    states, lengths = arrays["true_states"], arrays["lengths"]  # (E, S+1, n), (E,)
    episodes = np.arange(len(lengths))
    final = states[episodes, lengths]  # (E, n) the observation each episode ended in
    fell = outside(final, bounds)
    out = {"episodes": len(lengths), "fell": int(fell.sum()), "fall_steps": lengths[fell].tolist()}
    fall_causes = causes(final[fell], bounds)
    out["cause"] = {c: fall_causes.count(c) for c in sorted(set(fall_causes))}
    met = states[:, :-1]  # (E, S, n) the observation each step acted on (NaN after the end)
    out["pitch"] = float(np.nanmean(met[..., 1]))
    out["forward_velocity"] = float(np.nanmean(met[..., velocity_index]))
    ahead_of_end = lengths[:, None] - np.arange(met.shape[1])[None]  # (E, S): steps from step t to the end
    leading_up = (ahead_of_end > 0) & (ahead_of_end <= before) & fell[:, None]
    out["pitch_before_falls"] = float(met[..., 1][leading_up].mean()) if fell.any() else None
    out["forward_velocity_before_falls"] = (
        float(met[..., velocity_index][leading_up].mean()) if fell.any() else None
    )
    planned = arrays.get("planned_states")  # (E, S, H+1, n), or None for a policy
    if planned is not None:
        horizon = planned.shape[2] - 1
        # (E, S): the re-plan of this step predicts a state outside the limits
        predicts = outside(planned[:, :, 1:], bounds).any(-1)
        out["plans_predicting_a_fall"] = float(predicts[ahead_of_end > 0].mean())
        # The re-plans of the last H steps, the only ones whose H-step prediction can reach the fall.
        warned = predicts & (ahead_of_end > 0) & (ahead_of_end <= horizon) & fell[:, None]
        foreseen = warned.any(1)[fell]
        # The earliest such re-plan, in steps before the end.
        warning_steps = (lengths - warned.argmax(1))[fell]
        out["foreseen"] = int(foreseen.sum())
        # The plan made H steps before the end: its predicted last state beside the state met there.
        start = np.maximum(lengths[fell] - horizon, 0)
        predicted = planned[episodes[fell], start, np.minimum(lengths[fell] - start, horizon)]
        out["falls"] = [
            {"episode": int(e), "step": int(n), "cause": c, "foreseen": bool(f),
             "warning_steps": int(w) if f else None,
             "true_height_pitch": final[e, :2].astype(float).round(3).tolist(),
             "predicted_height_pitch": p[:2].astype(float).round(3).tolist()}
            for e, n, c, f, w, p in zip(episodes[fell], lengths[fell], fall_causes, foreseen, warning_steps,
                                        predicted, strict=True)
        ]  # fmt: skip
    return out


def load_methods(path: Path, names: list[str] | None) -> dict[str, dict[str, np.ndarray]]:
    """{method: {key: array}} from a trajectories.npz (`<method>/<key>` entries), read without pickle."""
    with np.load(path, allow_pickle=False) as npz:
        found: dict[str, dict[str, np.ndarray]] = {}
        for key in npz.files:
            method, _, field = key.partition("/")
            found.setdefault(method, {})[field] = npz[key]
    missing = [m for m in names or [] if m not in found]
    if missing:
        sys.exit(f"error: {path} has no method {missing}; it has {sorted(found)}")
    return {m: found[m] for m in names or sorted(found)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trajectories", type=Path)
    parser.add_argument("--env", required=True, help="walker2d or hopper")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method in the file")
    parser.add_argument(
        "--before", type=int, default=50, help="steps before a fall to average pitch and speed"
    )
    parser.add_argument("--output", default="falls.json")
    args = parser.parse_args(argv)
    bounds = limits(args.env)
    methods = load_methods(args.trajectories, args.methods)
    report = {
        name: method_falls(arrays, bounds, VELOCITY_INDEX[args.env], args.before)
        for name, arrays in methods.items()
    }
    payload = {
        "trajectories": str(args.trajectories),
        "env": args.env,
        "before": args.before,
        "limits": bounds.tolist(),
        "methods": report,
    }
    Path(args.output).write_text(json.dumps(payload, indent=1))
    fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
    print("| method | fell / episodes | cause | foreseen by the model | re-plans predicting a fall | "
          "pitch: all steps / before falls | forward velocity: all / before falls |")  # fmt: skip
    print("|" + "---|" * 7)
    for name, r in report.items():
        cause = ", ".join(f"{c} {n}" for c, n in r["cause"].items()) or "–"
        print(f"| {name} | {r['fell']} / {r['episodes']} | {cause} | {r.get('foreseen', '–')} | "
              f"{fmt(r.get('plans_predicting_a_fall'))} | {fmt(r['pitch'])} / {fmt(r['pitch_before_falls'])} | "
              f"{fmt(r['forward_velocity'])} / {fmt(r['forward_velocity_before_falls'])} |")  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
