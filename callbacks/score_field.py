"""Learned vs exact score as quiver images (2-D state domains), plus their mean cosine similarity."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.planning import log_figure, should_run
from sgp_lightning.distance import exact_score


class ScoreFieldCallback(L.Callback):
    """At u = 0 on a grid over the state box, at σ_max, a middle σ and σ_min.

    Logs `score/cosine_level<k>`: mean cosine similarity between learned and exact score on the grid
    points within one σ (in normalized units) of the data, where the learned score is expected to be right.
    """

    def __init__(self, every_n_epochs: int = 10, grid_size: int = 15, max_data: int = 20000):
        super().__init__()
        self.every_n_epochs, self.grid_size, self.max_data = max(1, int(every_n_epochs)), grid_size, max_data
        self._warned = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not should_run(trainer, self.every_n_epochs) or not trainer.is_global_zero:
            return
        score_model, datamodule = pl_module.score, getattr(trainer, "datamodule", None)
        env = pl_module.make_env()
        if score_model is None or datamodule is None or env.state_dim != 2 or not hasattr(env, "box"):
            if not self._warned:
                rank_zero_warn(
                    "ScoreFieldCallback draws 2-D state domains with a score model only; skipping."
                )
                self._warned = True
            return
        device = pl_module.device
        data = datamodule.train_data
        pairs = score_model.normalize_pair(
            data["x"][: self.max_data].to(device), data["u"][: self.max_data].to(device)
        )
        axis = torch.linspace(-env.box, env.box, self.grid_size, device=device)
        points = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
        z = score_model.normalize_pair(points, torch.zeros(points.shape[0], env.action_dim, device=device))
        last = score_model.schedule.num_levels - 1
        learned, exact = {}, {}
        with torch.no_grad():
            for level in sorted({0, last // 2, last}):
                sigma = float(score_model.schedule.sigmas[level])
                label = f"σ={sigma:.3g}"
                learned[label] = score_model(z, level)
                result = exact_score(z, pairs, sigma)
                exact[label] = result
                near = torch.cdist(z, pairs).min(1).values < sigma
                if near.any():
                    cosine = torch.nn.functional.cosine_similarity(learned[label][near], result[near], dim=-1)
                    pl_module.log(f"score/cosine_level{level}", cosine.mean(), rank_zero_only=True)
        from sgp_lightning.plotting import plot_score_field

        log_figure(trainer, "score/field", plot_score_field(env, points, learned, exact, data["x"]))
