"""Plan on the domain's tasks during validation; log cost of the plan versus cost achieved on the true env."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from sgp_lightning.planning import Evaluation, Planner, make_planner
from sgp_lightning.planning.evaluators import reduce_metrics


def should_run(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Every N validation epochs, and always after the final one (so a run ends with fresh metrics): the
    last epoch of a `max_epochs` run, or the validation that ends a `max_steps` run (D4RL's paper sizes)."""
    if trainer.sanity_checking:
        return False
    if trainer.fast_dev_run:
        return True
    epoch = trainer.current_epoch + 1
    max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
    last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
    return epoch % every_n_epochs == 0 or epoch >= max_epochs or last_step


def log_figure(trainer: L.Trainer, tag: str, fig) -> None:
    import matplotlib.pyplot as plt

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=trainer.global_step, close=False)
    plt.close(fig)


class PlanningCallback(L.Callback):
    """Plans with `planner` during validation, through the domain's Evaluator (open-loop tasks or MPC
    episodes), and logs the plan/* means (and, on rank 0, figures) to the loggers.

    Under DDP each rank evaluates its share (tasks[rank::world], or its own episodes) and the sums are
    all-reduced."""

    def __init__(
        self,
        planner: Planner | Mapping,
        every_n_epochs: int = 5,
        log_images: bool = True,
        evaluator: Mapping | None = None,
    ):
        """`planner`: a Planner or its config (conf/planner/). Plans every `every_n_epochs` validation
        epochs (and after the last). `evaluator` overrides the domain's evaluator settings, e.g.
        {mpc: true} (open-loop tasks re-planned every step) or {num_episodes: 4, episode_steps: 100}
        (shorter validation episodes of episodic domains)."""
        super().__init__()
        self.planner = make_planner(planner)
        self.every_n_epochs, self.log_images = max(1, int(every_n_epochs)), log_images
        self.evaluator_overrides = dict(evaluator or {})
        self.last_metrics: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if (
            stage == "fit"
        ):  # before the first epoch: a planner or evaluator this system cannot serve fails now
            self.planner.check(pl_module)
            pl_module.make_evaluator(self.evaluator_overrides)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not should_run(trainer, self.every_n_epochs):
            return
        env = pl_module.make_env()
        evaluator = pl_module.make_evaluator(self.evaluator_overrides)
        evaluation = evaluator.evaluate(
            pl_module, env, self.planner, rank=trainer.global_rank, world_size=trainer.world_size
        )
        reduce = functools.partial(trainer.strategy.reduce, reduce_op="sum")
        self.last_metrics = reduce_metrics(evaluator, evaluation, reduce, device=pl_module.device)
        for name, value in self.last_metrics.items():
            # Identical on every rank after the reduce, so no further sync is needed.
            pl_module.log(name, value, rank_zero_only=False, sync_dist=False)
        if self.log_images and trainer.is_global_zero and isinstance(evaluation, Evaluation):
            from sgp_lightning.plotting import plot_plans

            datamodule = getattr(trainer, "datamodule", None)
            data = datamodule.train_data["x"] if datamodule is not None and datamodule.train_data else None
            log_figure(trainer, "plan/trajectories", plot_plans(env, [evaluation], data))
            if env.image_shape is not None:
                from sgp_lightning.plotting import plot_image_rollouts

                log_figure(trainer, "plan/image_rollouts", plot_image_rollouts([evaluation]))
