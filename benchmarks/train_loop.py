"""Lightning's training loop vs a bare PyTorch loop over the same SGPSystem, batches and Adam; prints JSON.

- `bare`: a freshly built system (seed 0), for each batch of a ShuffledBatches over the training split (the
  batches the datamodule's loader yields): `zero_grad`, the sum of the trainable parts' losses, `backward`,
  `step`, with the Adam of the system's optimizer config (its cosine schedule, if any, left out);
- `lightning`: `lightning.Trainer.fit(system, datamodule)` on another freshly built system (seed 0), with
  no validation, no checkpointing, no progress bar and no logger; `lightning_tensorboard`: the same with
  the default TensorBoard logger (writing every `trainer.log_every_n_steps` steps into a temporary folder);
  `lightning_progress_bar`: with the logger and Lightning's progress bar too, as `python train.py` runs
  (its output discarded).

The machine this runs on is shared, so the two loops are timed side by side inside one fit: after
`--warmup` untimed steps (of each), Lightning's steps are timed in chunks of `--chunk`, and after each
chunk a callback runs `--chunk` bare steps, timed apart. A run reports both loops' steps/s over its
`--steps` timed steps and their ratio; the runs alternate between the Lightning variants `--repeats` times
and the medians are reported. Trainer start-up is not counted.

Configs: `pit` (`python train.py`'s default: conf/train.yaml and its datamodule) and `d4rl_small`
(experiment=d4rl/hopper_medium d4rl_size=small: dynamics, reward, score and a 5-member ensemble of 3 × 256,
a BC policy of 2 × 256, batch 256, cosine lr) on random transitions of hopper's shapes, 100k rows (no gym
and no dataset needed).

    OMP_NUM_THREADS=1 python benchmarks/train_loop.py [--configs pit,d4rl_small] [--repeats 5] [--device cpu]

`--device cuda` trains both loops on the GPU: Lightning with `accelerator="gpu", devices=1`, the bare loop
with its system on the same device and each batch moved there as Lightning moves it; the clocks wait for
the device (benchmarks/_timing.py). With `--validation`, it trains with `trainer=gpu`.

`--profile` instead runs cProfile over one Lightning fit per config (no bare steps) and prints its top
functions to stderr.

`--validation OVERRIDES` (repeatable) instead measures the PlanningCallback's share of the `train.py` run
those Hydra overrides compose (`""` is `python train.py`): the whole default run, or with `--epochs K`
K epochs planning after each, projected onto the default run's epochs and schedule (epoch-bounded runs).
The numbers and commands of docs/benchmarks.md:

    OMP_NUM_THREADS=1 python benchmarks/train_loop.py --validation "" --validation "experiment=stitching"
    OMP_NUM_THREADS=1 python benchmarks/train_loop.py --epochs 1 --validation "experiment=cartpole_small"
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from _timing import add_machine_arguments, now, print_result, use_machine  # benchmarks/: on sys.path when run
from hydra import compose, initialize_config_dir
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.base import ShuffledBatches, TransitionDataModule  # noqa: E402
from sgp_lightning.train import instantiate_env_and_data, instantiate_system  # noqa: E402

CONFIGS = {
    "pit": [],  # conf/train.yaml: the default domain and model
    "d4rl_small": ["experiment=d4rl/hopper_medium", "d4rl_size=small"],
}
VARIANTS = ("lightning", "lightning_tensorboard", "lightning_progress_bar")
CPU = torch.device("cpu")

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


class RandomTransitions(TransitionDataModule):
    """`num_samples` random transitions of the env's shapes (timing only)."""

    def __init__(self, env, num_samples: int, **kwargs):
        super().__init__(**kwargs)
        self.env, self.num_samples = env, num_samples

    def load_transitions(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        n, state, action = self.num_samples, tuple(self.env.state_shape), tuple(self.env.action_shape)
        return {
            "x": torch.randn(n, *state, generator=g),
            "u": torch.rand(n, *action, generator=g) * 2 - 1,
            "x_next": torch.randn(n, *state, generator=g),
            "r": torch.randn(n, generator=g),
            "done": torch.rand(n, generator=g) < 0.01,
        }


def compose_config(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=["paths.output_dir=/tmp/unused", *CONFIGS[name]])


def build(name: str):
    """(cfg, env, datamodule after setup) of a config."""
    cfg = compose_config(name)
    if name == "pit":
        env, datamodule = instantiate_env_and_data(cfg)
    else:  # D4RL: random rows of the dataset's size and the experiment's batch and split (no file needed)
        env = hydra.utils.instantiate(cfg.domain.env, _convert_="all")
        dm = cfg.domain.datamodule
        datamodule = RandomTransitions(
            env, int(dm.max_transitions), batch_size=int(dm.batch_size), val_fraction=float(dm.val_fraction)
        )
    datamodule.setup("fit")
    return cfg, env, datamodule


def new_system(cfg, env):
    torch.manual_seed(0)
    return instantiate_system(cfg, env)


class BareLoop:
    """The bare loop on its own freshly built system on `device`: `zero_grad`, the sum of the trainable
    parts' losses, `backward`, `step`, over the same batches as the datamodule's training loader (a new
    order each epoch; on a GPU each moved there, as Lightning moves them)."""

    def __init__(self, cfg, env, datamodule, device: torch.device):
        self.system = new_system(cfg, env).train()
        for part in self.system.trainable_parts.values():
            part.set_data(datamodule)
        self.device = device
        self.system.to(device)
        self.parts = list(self.system.trainable_parts.values())
        params = [p for part in self.parts for p in part.parameters() if p.requires_grad]
        self.optimizer = self.system.optimizer_factory(params=params)
        self.batches = self._batches(datamodule)

    @staticmethod
    def _batches(datamodule):
        loader = ShuffledBatches(datamodule.train_data, datamodule.batch_size, True, datamodule.seed + 1)
        while True:
            yield from loader

    @torch.enable_grad()
    def run(self, steps: int) -> float:
        """Seconds that `steps` steps took."""
        on_gpu = self.device.type == "cuda"
        start = now(self.device)
        for _ in range(steps):
            batch = next(self.batches)
            if on_gpu:
                batch = move_data_to_device(batch, self.device)
            self.optimizer.zero_grad()
            loss = sum(part.loss(batch) for part in self.parts)
            loss.backward()
            self.optimizer.step()
        return now(self.device) - start


class Interleave(L.Callback):
    """Times Lightning's steps in chunks of `chunk` and, between two chunks, runs `chunk` bare steps (timed
    apart), so both loops see the same machine load. The first `warmup` steps of each are not timed."""

    def __init__(self, bare: BareLoop, warmup: int, chunk: int):
        self.bare, self.warmup, self.chunk = bare, warmup, chunk
        self.lightning_s, self.bare_s, self.steps, self.start = 0.0, 0.0, 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # optimiser steps done
        if step < self.warmup or (step - self.warmup) % self.chunk:
            return
        end = now(self.bare.device)
        if self.start is None:  # end of warm-up: warm the bare loop up too
            self.bare.run(self.warmup)
        else:
            self.lightning_s += end - self.start
            self.steps += self.chunk
            self.bare_s += self.bare.run(self.chunk)
        self.start = now(self.bare.device)


def run_lightning(
    cfg,
    env,
    datamodule,
    warmup: int,
    steps: int,
    chunk: int,
    tensorboard: bool,
    bare: bool = True,
    progress_bar: bool = False,
    device: torch.device = CPU,
) -> dict:
    """One fit of `warmup + steps` steps on `device` with bare chunks interleaved: steps/s of each and
    their ratio (`bare=False`: no bare steps, for profiling)."""
    timer = Interleave(BareLoop(cfg, env, datamodule, device), warmup, chunk) if bare else None
    system = new_system(cfg, env)
    on_gpu = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        logger = TensorBoardLogger(tmp, name="tb", version="") if tensorboard else False
        trainer = L.Trainer(
            accelerator="gpu" if on_gpu else "cpu",
            devices=[device.index or 0] if on_gpu else 1,
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            logger=logger,
            log_every_n_steps=int(cfg.trainer.log_every_n_steps),
            callbacks=[timer] if timer else [],
            default_root_dir=tmp,
        )
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            trainer.fit(system, datamodule=datamodule)  # the progress bar writes to stdout
    if timer is None:
        return {}
    lightning, bare = timer.steps / timer.lightning_s, timer.steps / timer.bare_s
    return {"lightning": lightning, "bare": bare, "ratio": lightning / bare}


# ---------------------------------------------------------------- validation's share of a training run
def plans_in_run(epochs: int, every_n_epochs: int) -> int:
    """How many validations the PlanningCallback plans in during an `epochs`-epoch run (callbacks/planning.py:
    every N epochs and after the last)."""
    return sum(1 for epoch in range(1, epochs + 1) if epoch % every_n_epochs == 0 or epoch == epochs)


@contextlib.contextmanager
def timed_methods(targets: dict[str, tuple[type, str]], device: torch.device):
    """Patch each (class, method) to add its wall time (the clock waiting for `device`) and call count to
    `totals[name]` (and the time of its first call)."""
    totals = {name: [0.0, 0, None] for name in targets}
    originals, own = {}, {name: method in vars(cls) for name, (cls, method) in targets.items()}
    for name, (cls, method) in targets.items():
        original = originals[name] = getattr(cls, method)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            start = now(device)
            if totals[_name][2] is None:
                totals[_name][2] = start
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_name][0] += now(device) - start
                totals[_name][1] += 1

        setattr(cls, method, wrapper)
    try:
        yield totals
    finally:
        for name, (cls, method) in targets.items():
            if own[name]:
                setattr(cls, method, originals[name])
            else:  # inherited: drop the patch, the base class's method shows again
                delattr(cls, method)


def validation_share(overrides: list[str], epochs: int | None, device: torch.device) -> dict:
    """Train the run `overrides` compose (train.py's config) and time its parts: the fit, the validation
    loops, and the PlanningCallback's and ScoreFieldCallback's `on_validation_epoch_end` (counted only
    when they run). With `epochs`, the run is shortened to that many epochs with planning after each, and
    the times are projected onto the default run's epochs and planning schedule; without, the default run
    is measured as it is. The score-field images are left out of the projection (2-D domains: ~3% of a
    run). On a CUDA `device` the run trains with `trainer=gpu`."""
    from lightning.pytorch.loops import _EvaluationLoop

    from callbacks.planning import PlanningCallback
    from callbacks.score_field import ScoreFieldCallback
    from sgp_lightning.models import SGPSystem
    from sgp_lightning.train import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        default = compose(config_name="train", overrides=["paths.output_dir=/tmp/unused", *overrides])
    planning = (default.get("callbacks") or {}).get("planning")
    default_epochs = int(default.trainer.max_epochs)
    every_n = int(planning.every_n_epochs) if planning else None
    shrink = ["trainer=gpu"] if device.type == "cuda" else []
    if epochs:
        shrink = [f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false"]
        if planning:
            shrink.append("callbacks.planning.every_n_epochs=1")
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"paths.output_dir={tmp}", *overrides, *shrink])
        with open_dict(cfg):
            cfg.pop("hydra", None)
        targets = {
            "fit": (L.Trainer, "fit"),
            "validation": (_EvaluationLoop, "run"),
            "planning": (PlanningCallback, "on_validation_epoch_end"),
            "score_field": (ScoreFieldCallback, "on_validation_epoch_end"),
            "train_start": (SGPSystem, "on_train_start"),  # its first call ends the fit's start-up
        }
        with timed_methods(targets, device) as totals, contextlib.redirect_stdout(io.StringIO()):
            _, objects = train(cfg)
        trainer = objects["trainer"]
        ran = {"planning": 0, "score_field": 0}
        for callback in trainer.callbacks:
            kind = {PlanningCallback: "planning", ScoreFieldCallback: "score_field"}.get(type(callback))
            if kind:
                ran[kind] = plans_in_run(trainer.current_epoch, callback.every_n_epochs)
    fit_s, val_s = totals["fit"][0], totals["validation"][0]
    plan_s, field_s = totals["planning"][0], totals["score_field"][0]
    startup_s = totals["train_start"][2] - totals["fit"][2]  # setup, sanity check: once per run
    measured_epochs = trainer.current_epoch
    measured = {
        "epochs": measured_epochs,
        "fit_s": fit_s,
        "startup_s": startup_s,
        "validation_s": val_s,
        "planning_s": plan_s,
        "plans": ran["planning"],
        "score_field_s": field_s,
        "planning_share_of_fit": plan_s / fit_s,
        "planning_over_rest_of_fit": plan_s / (fit_s - plan_s),
    }
    result = {"overrides": overrides, "measured": measured}
    if epochs and planning and default_epochs > 0:  # project onto the default run
        # training + the rest of validation (and checkpoints), per epoch
        per_epoch = (fit_s - startup_s - plan_s - field_s) / measured_epochs
        per_plan = plan_s / max(ran["planning"], 1)
        plans = plans_in_run(default_epochs, every_n)
        plan_total, rest = plans * per_plan, startup_s + default_epochs * per_epoch
        result["default_run"] = {
            "epochs": default_epochs,
            "every_n_epochs": every_n,
            "evaluator": dict(planning.evaluator or {}),
            "plans": plans,
            "seconds_per_epoch_without_planning": per_epoch,
            "seconds_per_plan": per_plan,
            "planning_s": plan_total,
            "fit_s_without_score_field": rest + plan_total,
            "planning_share_of_fit": plan_total / (rest + plan_total),
            "planning_over_rest_of_fit": plan_total / rest,
        }
    return result


def profile(name: str, cfg, env, datamodule, warmup: int, steps: int, device: torch.device) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_lightning(cfg, env, datamodule, warmup, steps, steps, tensorboard=False, bare=False, device=device)
    profiler.disable()
    for order, count in (("cumulative", 60), ("tottime", 40)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(count)
        print(f"==== {name}: one Lightning fit ({warmup} + {steps} steps), by {order}", file=sys.stderr)
        print(out.getvalue(), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}"
    )
    parser.add_argument("--repeats", type=int, default=5, help="fits per Lightning variant (alternating)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per fit (default per config)")
    parser.add_argument("--chunk", type=int, default=None, help="steps per timed chunk (default per config)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before timing")
    add_machine_arguments(parser)
    parser.add_argument("--profile", action="store_true", help="cProfile one Lightning fit per config")
    parser.add_argument(
        "--validation",
        action="append",
        metavar="OVERRIDES",
        help="instead: validation's share of the train.py run these Hydra overrides compose (repeatable)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="with --validation: measure this many epochs (planning after each) and project onto the "
        "default run (default: run the default run as it is)",
    )
    args = parser.parse_args()
    device = use_machine(args)
    if args.validation:
        runs = [validation_share(o.split(), args.epochs, device) for o in args.validation]
        print_result("validation_share", device, {"runs": runs})
        return
    variants = args.variants.split(",")
    defaults = {"pit": (400, 40), "d4rl_small": (150, 15)}  # (timed steps, chunk): ~6 s per loop and fit
    results = {}
    for name in args.configs.split(","):
        cfg, env, datamodule = build(name)
        steps, chunk = args.steps or defaults[name][0], args.chunk or defaults[name][1]
        if args.profile:
            profile(name, cfg, env, datamodule, args.warmup, steps, device)
            continue
        runs = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                runs[variant].append(
                    run_lightning(
                        cfg,
                        env,
                        datamodule,
                        args.warmup,
                        steps,
                        chunk,
                        tensorboard=variant != "lightning",
                        progress_bar=variant == "lightning_progress_bar",
                        device=device,
                    )
                )
        results[name] = {
            "steps_timed": steps,
            "chunk": chunk,
            "batch_size": datamodule.batch_size,
            "steps_per_epoch": len(ShuffledBatches(datamodule.train_data, datamodule.batch_size, True, 0)),
            "parts": list(new_system(cfg, env).trainable_parts),
            **{
                variant: {
                    "ratio_median": statistics.median(r["ratio"] for r in rs),
                    "steps_per_s_median": statistics.median(r["lightning"] for r in rs),
                    "bare_steps_per_s_median": statistics.median(r["bare"] for r in rs),
                    "ratios": [r["ratio"] for r in rs],
                }
                for variant, rs in runs.items()
            },
        }
    if not args.profile:
        print_result("train_loop", device, results)


if __name__ == "__main__":
    main()
