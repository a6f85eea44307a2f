"""What the learned model believes a pixel plan's first step does, against what the true env does with it.

    python scripts/pixel_first_step.py RUN/checkpoints/last.ckpt [--planner-set pixel_integrator_small]

Plans the checkpoint's tasks with vanilla MBRL and SGP (the planner set's settings) and prints, per method:
the model's first move and the true first control (the normalized image's), the first action images'
total and negative intensity, and the planned-versus-true position error at every step. The numbers
behind the pixel section of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sgp_lightning.models import SGPSystem
from sgp_lightning.planning import plan_and_evaluate

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--planner-set", default="pixel_integrator_small")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="plan", overrides=[f"planner_set={args.planner_set}", f"ckpt_path={args.ckpt}"]
        )
    planners = OmegaConf.to_container(cfg.planners, resolve=True)
    system = SGPSystem.load_from_checkpoint(args.ckpt)
    env = system.make_env()
    tasks = env.tasks()
    report = {}
    for name in ("vanilla", "sgp"):
        torch.manual_seed(cfg.seed)
        evaluation = plan_and_evaluate(system, env, tasks, planners[name], method=name)
        first = evaluation.plan.actions[:, 0]
        planned = env.extract_state(evaluation.plan.states)
        true = env.extract_state(evaluation.true_states)
        report[name] = {
            "cost_planned": float(evaluation.cost_planned.mean()),
            "cost_achieved": float(evaluation.cost_achieved.mean()),
            "model_first_move": float((planned[:, 1] - planned[:, 0]).norm(dim=-1).mean()),
            "true_first_control": float(env.extract_action(env.normalize_action(first)).norm(dim=-1).mean()),
            "first_image_total_intensity": float(first.sum((-1, -2, -3)).mean()),
            "first_image_negative_intensity": float(first.clamp(max=0).sum((-1, -2, -3)).mean()),
            "position_error_per_step": [round(float(e), 4) for e in (planned - true).norm(dim=-1).mean(0)],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
