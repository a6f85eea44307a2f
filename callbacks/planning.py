"""Plan on the domain's tasks during validation; log cost of the plan versus cost achieved on the true env."""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from sgp_lightning.planning import Planner, make_planner, plan_and_evaluate

METRICS = ("cost_planned", "cost_achieved", "model_error")


def should_run(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Every N validation epochs, and always after the final one (so a run ends with fresh metrics)."""
    if trainer.sanity_checking:
        return False
    if trainer.fast_dev_run:
        return True
    epoch = trainer.current_epoch + 1
    max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
    return epoch % every_n_epochs == 0 or epoch >= max_epochs


def log_figure(trainer: L.Trainer, tag: str, fig) -> None:
    import matplotlib.pyplot as plt

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=trainer.global_step, close=False)
    plt.close(fig)


class PlanningCallback(L.Callback):
    """Plans with `planner` during validation and logs plan/* metrics (and images) to the loggers.

    Under DDP each rank plans its share of the tasks (tasks[rank::world]); sums are all-reduced."""

    def __init__(
        self,
        planner: Planner | Mapping,
        every_n_epochs: int = 5,
        mpc: bool = False,
        log_images: bool = True,
        episodes: int | None = None,
        episode_steps: int | None = None,
    ):
        """`planner`: a Planner or its config (conf/planner/). Plans every `every_n_epochs` validation
        epochs (and after the last), open loop or with `mpc`. `episodes` and `episode_steps` shorten the
        evaluation of episodic domains (D4RL), whose validation runs MPC episodes instead of open-loop tasks
        (None: the domain's own settings)."""
        super().__init__()
        self.planner = make_planner(planner)
        self.every_n_epochs, self.mpc, self.log_images = max(1, int(every_n_epochs)), mpc, log_images
        self.episodes, self.episode_steps = episodes, episode_steps
        self.last_metrics: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # before the first epoch: a planner this system cannot serve fails now
            self.planner.check(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not should_run(trainer, self.every_n_epochs):
            return
        env = pl_module.make_env()
        if getattr(env, "episodic", False):
            self._run_episodes(trainer, pl_module, env)
            return
        tasks = env.tasks().select(slice(trainer.global_rank, None, trainer.world_size))
        totals = torch.zeros(len(METRICS) + 1, device=pl_module.device)
        evaluation = None
        if len(tasks) > 0:
            evaluation = plan_and_evaluate(pl_module, env, tasks, self.planner, mpc=self.mpc)
            sums = [getattr(evaluation, m).sum().to(pl_module.device) for m in METRICS]
            count = torch.tensor(float(len(tasks)), device=pl_module.device)
            totals = torch.stack([*sums, count])
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
        means = (totals[:-1] / totals[-1]).tolist()
        self.last_metrics = {f"plan/{m}": v for m, v in zip(METRICS, means, strict=True)}
        for name, value in self.last_metrics.items():
            # Identical on every rank after the reduce, so no further sync is needed.
            pl_module.log(name, value, rank_zero_only=False, sync_dist=False)
        if self.log_images and trainer.is_global_zero and evaluation is not None:
            from sgp_lightning.plotting import plot_plans

            datamodule = getattr(trainer, "datamodule", None)
            data = datamodule.train_data["x"] if datamodule is not None and datamodule.train_data else None
            log_figure(trainer, "plan/trajectories", plot_plans(env, [evaluation], data))
            if env.image_shape is not None:
                from sgp_lightning.plotting import plot_image_rollouts

                log_figure(trainer, "plan/image_rollouts", plot_image_rollouts([evaluation]))

    def _run_episodes(self, trainer: L.Trainer, pl_module, env) -> None:
        """Each rank runs its share of the episodes (seeds offset by rank); return and D4RL-normalised
        score are averaged over all of them."""
        from sgp_lightning.planning.episodes import run_episodes

        episodes = int(self.episodes or env.num_episodes)
        per_rank = math.ceil(episodes / trainer.world_size)
        evaluation = run_episodes(
            pl_module, env, self.planner, num_episodes=per_rank, max_steps=self.episode_steps,
            seed=env.episode_seed + trainer.global_rank * per_rank,
        )  # fmt: skip
        sums = [float(evaluation.returns.sum()), float(evaluation.normalized_scores.sum()), float(per_rank)]
        totals = trainer.strategy.reduce(torch.tensor(sums, device=pl_module.device), reduce_op="sum")
        self.last_metrics = {
            "plan/return": float(totals[0] / totals[2]),
            "plan/normalized_score": float(totals[1] / totals[2]),
        }
        for name, value in self.last_metrics.items():
            pl_module.log(name, value, rank_zero_only=False, sync_dist=False)
