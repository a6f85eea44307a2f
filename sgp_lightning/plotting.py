"""Figures shared by the callbacks, plan.py and reproduce.py (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sgp_lightning.envs import Env  # noqa: E402


def save_figure(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_plans(env: Env, evaluations: Sequence, data: torch.Tensor | None = None, max_data: int = 3000):
    """One panel per method: planned (dashed, learned model) vs true (solid) 2-D trajectories over the data."""
    fig, axes = plt.subplots(1, len(evaluations), figsize=(4.2 * len(evaluations), 4.4), squeeze=False)
    for ax, ev in zip(axes[0], evaluations, strict=True):
        if data is not None:
            ax.scatter(*data[:max_data, :2].T.cpu(), s=1, c="0.75", rasterized=True)
        env.draw(ax)
        planned = env.positions(ev.plan.states.detach()).cpu()
        true = env.positions(ev.true_states.detach()).cpu()
        for i in range(planned.shape[0]):
            ax.plot(*planned[i, :, :2].T, "--", color=f"C{i % 10}", lw=1.2)
            ax.plot(*true[i, :, :2].T, "-", color=f"C{i % 10}", lw=1.5)
        ax.set_title(
            f"{ev.method}\nplanned {ev.cost_planned.mean():.3g} / achieved {ev.cost_achieved.mean():.3g}",
            fontsize=10,
        )
    axes[0][0].plot([], [], "k--", label="planned (model)")
    axes[0][0].plot([], [], "k-", label="true rollout")
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def plot_image_rollouts(evaluations: Sequence, task: int = 0, max_steps: int = 16):
    """Fig. 3 style strips for one task: per method, the planned observations (learned model), the planned
    action images, and the true observations when those actions are executed; one column per step."""
    rows = [
        (f"{ev.method}: {label}", images[task].detach().cpu())
        for ev in evaluations
        for label, images in (
            ("planned y", ev.plan.states),
            ("action û", ev.plan.actions),
            ("true y", ev.true_states),
        )
    ]
    steps = min(max_steps, max(images.shape[0] for _, images in rows))
    fig, axes = plt.subplots(len(rows), steps, figsize=(0.75 * steps + 1.2, 0.8 * len(rows)), squeeze=False)
    for row, (label, images) in enumerate(rows):
        for col in range(steps):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < images.shape[0]:
                ax.imshow(images[col, 0], cmap="gray", origin="lower")
            else:
                ax.axis("off")
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    for col in range(steps):
        axes[0][col].set_title(f"t={col}", fontsize=7)
    fig.subplots_adjust(left=0.2, wspace=0.05, hspace=0.1)
    return fig


def plot_score_field(
    env: Env, points: torch.Tensor, learned: dict, exact: dict, data: torch.Tensor | None = None
):
    """Quiver of learned (top) vs exact (bottom) score, x-components, one column per σ label."""
    labels = list(learned)
    fig, axes = plt.subplots(2, len(labels), figsize=(3.6 * len(labels), 7.2), squeeze=False)
    for col, label in enumerate(labels):
        for row, (name, field) in enumerate((("learned", learned[label]), ("exact", exact[label]))):
            ax = axes[row][col]
            if data is not None:
                ax.scatter(*data[:2000, :2].T.cpu(), s=1, c="0.8", rasterized=True)
            env.draw(ax)
            vectors = field[:, :2].cpu()
            vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(
                1e-8
            )  # directions; norms vary by 1/σ
            ax.quiver(
                *points[:, :2].T.cpu(), *vectors.T, color="tab:blue" if row == 0 else "tab:green", scale=25
            )
            ax.set_title(f"{name} score, {label}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_sweep(rows: Sequence[dict], x_key: str = "beta"):
    """Fig. 5 shape: achieved (and planned) cost and model error against β, log-x (β = 0 drawn at the left)."""
    rows = sorted(rows, key=lambda r: r[x_key])
    positive = [r[x_key] for r in rows if r[x_key] > 0]
    zero_at = min(positive) / 10 if positive else 1e-4
    xs = [r[x_key] if r[x_key] > 0 else zero_at for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].plot(xs, [r["cost_achieved"] for r in rows], "o-", label="achieved (true env)")
    axes[0].plot(xs, [r["cost_planned"] for r in rows], "s--", label="planned (model)")
    axes[0].set_ylabel("cost")
    axes[0].legend(fontsize=8)
    axes[1].plot(xs, [r["model_error"] for r in rows], "o-", color="tab:red")
    axes[1].set_ylabel("model error ‖x̂ − x‖")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(f"{x_key} (β = 0 drawn at {zero_at:.0e})")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_model_error_horizon(methods: dict):
    """mbrl-lib's model-error plot: each method's mean ‖x̂ − x‖ of the learned model's prediction against the
    true states, by steps predicted ahead, from results' "model_error_horizon" entries."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for name, metrics in methods.items():
        errors = metrics.get("model_error_horizon")
        if errors:
            ax.plot(range(1, len(errors) + 1), errors, "o-", label=name)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("model error ‖x̂ − x‖ (state units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_convergence(methods: dict):
    """Paper Fig. 2F: the true cost of each method's current plan against optimiser iterations (mean over
    tasks), from results' "convergence" entries; log-log axes."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for name, metrics in methods.items():
        curve = metrics.get("convergence")
        if curve:
            iterations = [i + 1 for i in curve["iteration"]]  # iteration 0 (the start) drawn at 1
            ax.plot(iterations, curve["true_cost"], label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser iteration")
    ax.set_ylabel("true cost of the current plan")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_uncertainty_1d(payload: dict):
    """Paper Fig. 1: top row, f, the samples, f_θ and the uncertainty band f_θ ± μ per metric; bottom row,
    the penalty μ²(x) and where gradient descent on f_θ + βμ² ended (histogram of the final x)."""
    curves, data, metrics = payload["curves"], payload["data"], payload["metrics"]
    names = {"distance": "distance to data", "ensemble": "ensemble (M = 2)", "gp": "Gaussian process"}
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 6.5), sharex=True)
    x = curves["x"]
    for column, (metric, title) in enumerate(names.items()):
        top, bottom = axes[0, column], axes[1, column]
        penalty = torch.tensor(curves["penalty"][metric])
        model = torch.tensor(curves["model"])
        top.plot(x, curves["true"], color="black", lw=1, label="true f")
        top.plot(x, model, color="tab:blue", lw=1.2, label="learned f_θ")
        top.fill_between(x, model - penalty.sqrt(), model + penalty.sqrt(), color="tab:blue", alpha=0.15)
        if metric == "ensemble":
            for member in curves["members"]:
                top.plot(x, member, color="tab:orange", lw=0.8, ls="--")
        top.scatter(data["x"], data["y"], color="red", zorder=3, s=18, label="data")
        top.set_title(title)
        top.set_ylim(min(curves["true"]) - 1.5, max(curves["true"]) + 1.5)
        bottom.plot(x, penalty, color="tab:purple", lw=1.2, label="μ²(x) (scaled)")
        for point in data["x"]:
            bottom.axvline(point, color="red", lw=0.6, alpha=0.5)
        ends = [v for v in metrics[metric]["final_x"] if x[0] <= v <= x[-1]]
        twin = bottom.twinx()
        twin.hist(ends, bins=80, range=(x[0], x[-1]), color="gray", alpha=0.5)
        twin.set_yticks([])
        share = metrics[metric]["landed_on_data"]
        bottom.set_title(f"runs ending on data: {share:.0%}", fontsize=9)
        bottom.set_xlabel("x")
    axes[0, 0].legend(fontsize=7, loc="upper center")
    axes[1, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
