"""`python reproduce.py box_pushing output_dir=DIR` (paper C.4, Fig. 4, Table 3): box pushing with learned
marker dynamics from ~100 demonstrations, for every seed of `reproduce.seeds` (demonstrations, training,
planning): each trains (or reuses its finished training), chooses SGP's β on its own tuning task set and
plans the table's tasks; the seeds run one after another or in `reproduce.workers` processes. Every tuning
plan and every table plan is a piece of its own (sgp_lightning/pieces.py), so a rerun of the same command
reuses what finished.

0. β (per seed): SGP's achieved cost (MPC) for each β of `beta_sweep` and vanilla's on a separate task set
   (`tuning_task_seed`, `tuning_trials_per_goal` trials per goal): the tuning curve, mean ± standard error
   over those trials; the chosen β has the lowest mean. Its stability: how often the same β is chosen when
   the tuning trials are resampled (bootstrap).
1. Data stabilisation (Fig. 4B): marker sets of held-out transitions are pushed off their rigid constraint
   by Gaussian noise, then moved by annealed ascent on the learned score alone (β = ∞; the pusher and the
   action stay as recorded). Reported: the rigid-constraint error (mean |pairwise marker distance − true
   distance|) before and after, beside the same ascent with the exact score of the training data.
2. Rollout stability (Fig. 4C/D): the learned model's open-loop prediction of the actions each method
   executed, from the start state; the rigid-constraint error of the predicted markers at every step.
3. Table 3: MPC with SGP and with vanilla MBRL to the goals (left, center, right), `trials_per_goal` trials
   each; achieved cost (eq. 47) on the simulated true system, mean ± std over the trials.
"""

from __future__ import annotations

import copy
import functools
import statistics
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from sgp_lightning.analysis.common import Report, planner_settings, provenance, train_run
from sgp_lightning.analysis.score_check import anneal_ascent
from sgp_lightning.distance import ExactScoreModel
from sgp_lightning.errors import require
from sgp_lightning.models import SGPSystem
from sgp_lightning.pieces import json_piece, map_runs, settings_key
from sgp_lightning.planning import plan_and_evaluate

METHOD_LABELS = {"sgp": "SGP", "vanilla": "vanilla MBRL"}


def _paired(a: list[float], b: list[float]) -> dict:
    """a − b over the same tasks: mean, its standard error, and the share of tasks where a is lower."""
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    return {"mean": float(d.mean()), "standard_error": float(d.std() / len(d) ** 0.5), "lower_share": float((d < 0).double().mean())}  # fmt: skip


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


@torch.no_grad()
def stabilise(score, env, x: torch.Tensor, u: torch.Tensor, perturbation: float, seed: int,
              steps_per_level: int, step_size: float, exact_pairs: torch.Tensor | None = None) -> dict:  # fmt: skip
    """Perturb the markers of (x, u) pairs by N(0, perturbation²) per coordinate (cm), then ascend log p_σ in
    the markers only, level by level; returns the rigid-constraint errors and the marker sets."""
    generator = torch.Generator().manual_seed(seed)
    noisy = x.clone()
    noisy[:, :10] += perturbation * torch.randn(noisy[:, :10].shape, generator=generator)
    mask = torch.zeros(x.shape[1] + u.shape[1])
    mask[:10] = 1.0  # markers move; the pusher and the action stay as recorded
    scores = {"learned": score}
    if exact_pairs is not None:
        scores["exact"] = ExactScoreModel(exact_pairs, score.schedule, pair_norm=score.pair_norm)
    report = {
        "perturbation_cm": perturbation,
        "num_pairs": len(x),
        "before": _mean_std(env.rigidity_error(noisy).tolist()),
    }
    states = {"clean": x, "perturbed": noisy}
    for name, model in scores.items():
        z = anneal_ascent(model, model.normalize_pair(noisy, u), steps_per_level, step_size, mask)
        landed = score.pair_norm.denormalize(z)[:, : x.shape[1]]
        report[f"after_{name}"] = _mean_std(env.rigidity_error(landed).tolist())
        report[f"moved_{name}_cm"] = float((landed - noisy)[:, :10].unflatten(-1, (5, 2)).norm(dim=-1).mean())
        states[name] = landed
    return {"report": report, "states": states}


def _plan_tasks(system, env, tasks, settings: dict, name: str, seed: int):
    """MPC of every task with one planner's settings; the planner's randomness and the env's marker noise
    start from `seed`, so every method and β sees the same, whatever was planned before (or reused)."""
    torch.manual_seed(seed)
    env.reset_noise()
    return plan_and_evaluate(system, env, tasks, settings, mpc=True, method=name)


def sweep_beta(system, env, planners: dict, betas: list[float], task_seed: int, trials_per_goal: int, seed: int,
               folder: Path, depends_on: str, fresh: bool = False, resamples: int = 1000) -> dict:  # fmt: skip
    r"""
    SGP's achieved cost (MPC) for each β, and vanilla's, on a task set of its own: the tuning curve and the
    choice of β (the lowest mean achieved cost).

    Args:
        system (`SGPSystem`): the trained models (CPU).
        env (`BoxPushingEnv`): the table's env; the tuning tasks are drawn from a copy of it.
        planners (`dict`): plan.py's planner settings by name (`sgp`, `vanilla`).
        betas (`list[float]`): SGP's β grid.
        task_seed (`int`): seeds the tuning tasks' starts; must differ from the table's `env.task_seed`.
        trials_per_goal (`int`): tuning trials per goal (≥ 2, for a standard error).
        seed (`int`): the planners' seed.
        folder (`Path`): each β's plan is a piece in folder/beta_<β> (vanilla: beta_0), reused when finished.
        depends_on (`str`): the key of the training the system comes from.
        fresh (`bool`): plan again even where a finished piece is.
        resamples (`int`): bootstrap resamples of the tuning trials for the choice's stability.

    Returns:
        `dict`: `rows` (per β, vanilla first: mean achieved cost, its standard error over the trials, mean
        per goal, success rate, per-trial costs and, for SGP, the share of bootstrap resamples that choose
        it), `chosen_beta` and `chosen_share` (that share for the chosen β).
    """
    require(
        task_seed != env.task_seed, f"tuning_task_seed must differ from the table's task_seed {env.task_seed}"
    )
    require(int(trials_per_goal) >= 2, f"tuning_trials_per_goal must be ≥ 2, got {trials_per_goal}")
    tuning_env = copy.copy(env)
    tuning_env.task_seed, tuning_env.trials_per_goal = int(task_seed), int(trials_per_goal)
    tuning_env.reset_noise()  # its own noise stream (the copy would share env's generator)
    tasks, goals = tuning_env.tasks(), tuning_env.task_goals()
    per_trial = []
    for beta in [0.0, *betas]:
        name = "vanilla" if beta == 0 else "sgp"
        settings = planners[name] if beta == 0 else {**planners["sgp"], "beta": beta}

        def run(settings=settings, name=name) -> dict:
            evaluation = _plan_tasks(system, tuning_env, tasks, settings, name, seed)
            return {"cost_achieved": evaluation.cost_achieved, "success": evaluation.success}

        key = settings_key(settings, depends_on, task_seed, trials_per_goal, seed)
        per_trial.append(json_piece(Path(folder) / f"beta_{beta:g}", key, run, fresh))
    costs = torch.tensor([p["cost_achieved"] for p in per_trial], dtype=torch.float64)  # (β, trials)
    ranked = torch.where(costs.isnan(), torch.inf, costs)  # a diverged plan is never chosen
    # Bootstrap: resample the trials (the same ones for every β: they share tasks and noise), choose again.
    picks = torch.randint(
        costs.shape[1], (resamples, costs.shape[1]), generator=torch.Generator().manual_seed(seed)
    )
    choices = ranked[1:, picks].mean(-1).argmin(0)  # (resamples,) index into betas
    shares = torch.bincount(choices, minlength=len(betas)).double() / resamples
    chosen = int(ranked[1:].mean(1).argmin())
    rows = []
    for i, beta in enumerate([0.0, *betas]):
        rows.append({
            "beta": beta,
            "cost_achieved": float(costs[i].mean()),
            "standard_error": float(costs[i].std() / costs.shape[1] ** 0.5),
            "per_goal": {g: float(costs[i, [k for k, h in enumerate(goals) if h == g]].mean()) for g in env.goal_names},
            "success_rate": statistics.fmean(map(float, per_trial[i]["success"])),
            "chosen_share": None if i == 0 else float(shares[i - 1]),
            "cost_achieved_per_trial": costs[i].tolist(),
        })  # fmt: skip
    return {"task_seed": int(task_seed), "trials_per_goal": int(trials_per_goal), "resamples": resamples,
            "rows": rows, "chosen_beta": float(betas[chosen]), "chosen_share": float(shares[chosen]),
            "chosen_minus_vanilla": _paired(rows[chosen + 1]["cost_achieved_per_trial"], rows[0]["cost_achieved_per_trial"])}  # fmt: skip


def _table_plan(system, env, tasks, settings: dict, name: str, seed: int) -> dict:
    """One method's MPC on the table's tasks, as plain values: achieved cost, final marker error and success
    per goal, and the learned model's open-loop prediction of the executed actions (rigidity and error)."""
    evaluation = _plan_tasks(system, env, tasks, settings, name, seed)
    goals, per_goal = env.task_goals(), {}
    for goal in env.goal_names:
        index = [i for i, g in enumerate(goals) if g == goal]
        per_goal[goal] = {
            "cost_achieved": _mean_std(evaluation.cost_achieved[index].tolist()),
            "final_marker_error_cm": _mean_std(env.marker_error(evaluation.true_states[index, -1], tasks.goal[index]).tolist()),
            "success_rate": float(evaluation.success[index].float().mean()),
        }  # fmt: skip
    predicted = evaluation.plan.states
    return {
        "per_goal": per_goal,
        "cost_achieved": float(evaluation.cost_achieved.mean()),
        "final_marker_error_cm": float(env.marker_error(evaluation.true_states[:, -1], tasks.goal).mean()),
        "success_rate": float(evaluation.success.float().mean()),
        "model_rigidity_error_per_step": env.rigidity_error(predicted).mean(0).tolist(),
        "model_error_per_step_cm": (predicted - evaluation.true_states)[..., :10]
        .unflatten(-1, (5, 2))
        .norm(dim=-1)
        .mean((0, 2))
        .tolist(),
        "seconds": evaluation.seconds,
        "planner": settings,
        "per_task": [
            {"goal": g, "cost_achieved": float(c)}
            for g, c in zip(goals, evaluation.cost_achieved, strict=True)
        ],
        "true_states": evaluation.true_states,  # for the figure; left out of the entry's results.json
    }


def _seed_run(run_cfg: dict, compose, seed: int) -> dict:
    """One seed of the entry (it may run in a worker process): train or reuse, stabilisation, β on the
    tuning tasks, then every method on the table's tasks. `run_cfg` holds `reproduce` (the entry, resolved),
    `output_dir` and `num_threads`."""
    cfg = OmegaConf.create(run_cfg)
    entry, fresh = cfg.reproduce, bool(cfg.reproduce.get("fresh", False))
    torch.set_num_threads(int(cfg.num_threads))
    trained = train_run(cfg, compose, seed)
    env, datamodule = trained["env"], trained["datamodule"]
    # Plan with the saved checkpoint, as `plan.py ckpt_path=…` does: pushing outcomes are sensitive to the
    # last bits of the model's floats (contact), so this keeps the table equal to what plan.py reproduces.
    require(
        trained["ckpt_path"] is not None,
        "box_pushing plans from the run's last checkpoint; keep callbacks.model_checkpoint on",
    )
    system = SGPSystem.load_from_checkpoint(trained["ckpt_path"])
    require(
        system.score is not None and system.dynamics is not None,
        "box_pushing needs dynamics and score models",
    )
    run_dir = Path(trained["ckpt_path"]).parent.parent

    # 1. Data stabilisation on held-out transitions, learned score vs the exact score of the training pairs.
    val = datamodule.val_data
    train_pairs = torch.cat([datamodule.train_data["x"], datamodule.train_data["u"]], -1)
    stab = stabilise(system.score, env, val["x"], val["u"], float(entry.perturbation), seed,
                     int(entry.steps_per_level), float(entry.step_size), train_pairs)  # fmt: skip

    # β of SGP: chosen on a separate task set (tuning_task_seed), never on the table's own tasks.
    planners = planner_settings(compose, entry.plan_overrides)
    sweep = None
    if entry.get("beta_sweep"):
        sweep = sweep_beta(system, env, planners, [float(b) for b in entry.beta_sweep], int(entry.tuning_task_seed),
                           int(entry.tuning_trials_per_goal), seed, run_dir / "tune", trained["key"], fresh)  # fmt: skip
        planners["sgp"]["beta"] = sweep["chosen_beta"]

    # 2–3. MPC to every goal with each method; the executed actions' open-loop prediction by the model.
    tasks, methods = env.tasks(), {}
    for name in entry.methods:
        key = settings_key(planners[name], trained["key"], seed)
        run = functools.partial(_table_plan, system, env, tasks, planners[name], name, seed)
        methods[name] = json_piece(run_dir / "plan" / name, key, run, fresh)
    return {
        "seed": seed,
        "transitions": len(datamodule.train_data["x"]) + len(val["x"]),
        "stabilisation": stab["report"],
        "stabilised": {name: states[:2] for name, states in stab["states"].items()},  # the figure's two sets
        "beta_sweep": sweep,
        "methods": methods,
    }


def reproduce_box_pushing(cfg, compose) -> dict:
    report, entry = Report(cfg), cfg.reproduce
    seeds = [int(s) for s in entry.seeds]
    require(
        len(seeds) > 0 and len(set(seeds)) == len(seeds),
        f"reproduce.seeds must be distinct seeds, got {seeds}",
    )
    require(set(entry.methods) <= {"sgp", "vanilla"} and "sgp" in entry.methods,
            f"reproduce.methods must hold sgp (and vanilla), got {list(entry.methods)}")  # fmt: skip
    run_cfg = {"reproduce": OmegaConf.to_container(entry, resolve=True), "output_dir": str(cfg.output_dir),
               "num_threads": int(cfg.num_threads)}  # fmt: skip
    runs = map_runs(functools.partial(_seed_run, run_cfg, compose), seeds, int(entry.get("workers", 1)),
                    progress=bool(cfg.get("progress", False)))  # fmt: skip
    env = hydra.utils.instantiate(compose("train", list(entry.train_overrides)).domain.env, _convert_="all")
    first = runs[0]
    true_states = {name: torch.tensor(m["true_states"]) for name, m in first["methods"].items()}
    per_seed = {
        str(run["seed"]): {
            "transitions": run["transitions"],
            "stabilisation": run["stabilisation"],
            "methods": {name: {k: v for k, v in m.items() if k != "true_states"} for name, m in run["methods"].items()},
        }
        for run in runs
    }  # fmt: skip
    payload = {
        "seeds": seeds,
        "train_overrides": list(entry.train_overrides),
        "tuning": None
        if not entry.get("beta_sweep")
        else {
            "task_seed": int(entry.tuning_task_seed),
            "trials_per_goal": int(entry.tuning_trials_per_goal),
            "per_seed": {str(run["seed"]): run["beta_sweep"] for run in runs},
        },  # fmt: skip
        "per_seed": per_seed,
        "mean_over_seeds": _over_seeds(per_seed, env.goal_names),
        "paper": {k: dict(v) for k, v in entry.paper.items()} if entry.get("paper") else None,
    }
    if {"sgp", "vanilla"} <= set(entry.methods):
        for run in per_seed.values():  # paired over the table's tasks
            costs = {
                n: [t["cost_achieved"] for t in run["methods"][n]["per_task"]] for n in ("sgp", "vanilla")
            }
            run["sgp_minus_vanilla"] = _paired(costs["sgp"], costs["vanilla"])
        payload["sgp_below_vanilla_seeds"] = [
            int(s) for s, run in per_seed.items()
            if run["methods"]["sgp"]["cost_achieved"] < run["methods"]["vanilla"]["cost_achieved"]
        ]  # fmt: skip
    payload.update(report.record())
    figure = plot_box_pushing(env, env.tasks(), true_states, first["stabilised"], per_seed[str(first["seed"])]["methods"],
                              payload["tuning"])  # fmt: skip
    report.save_figure(figure, "box_pushing.png")
    return report.write(payload, _markdown(payload, env))


def _over_seeds(per_seed: dict, goal_names: list[str]) -> dict:
    """Each method's achieved cost per goal and over all goals (`all`): mean ± std over the seeds of each
    seed's mean over its trials."""
    names = next(iter(per_seed.values()))["methods"]
    return {
        name: {
            **{goal: _mean_std([run["methods"][name]["per_goal"][goal]["cost_achieved"]["mean"] for run in per_seed.values()])
               for goal in goal_names},
            "all": _mean_std([run["methods"][name]["cost_achieved"] for run in per_seed.values()]),
        }
        for name in names
    }  # fmt: skip


def _label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _markdown(payload: dict, env) -> str:
    per_seed, paper, over = payload["per_seed"], payload.get("paper") or {}, payload["mean_over_seeds"]
    seeds, names = list(per_seed), list(over)
    columns = ["goal", *[f"seed {s}: {_label(n)}" for s in seeds for n in names],
               *[f"mean over seeds: {_label(n)}" for n in names]] + (["paper: SGP / vanilla"] if paper else [])  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for goal in [*env.goal_names, "all"]:
        cells = []
        for s in seeds:
            for n in names:
                m = per_seed[s]["methods"][n]
                value = (
                    m["per_goal"][goal]["cost_achieved"]
                    if goal != "all"
                    else _mean_std([t["cost_achieved"] for t in m["per_task"]])
                )
                cells.append(f"{value['mean']:.1f} ± {value['std']:.1f}")
        cells += [f"{over[n][goal]['mean']:.1f} ± {over[n][goal]['std']:.1f}" for n in names]
        if paper:
            cells.append(
                " / ".join(paper[n][goal] for n in ("sgp", "vanilla") if n in paper) if goal != "all" else "–"
            )
        lines.append(f"| {goal if goal != 'all' else '**all goals**'} | " + " | ".join(cells) + " |")  # fmt: skip
    tuning = payload.get("tuning")
    paired = "sgp_minus_vanilla" in per_seed[seeds[0]]
    summary = [
        "| seed | SGP β | " + " | ".join(f"{_label(n)}: final marker error (cm) / success" for n in names)
        + " | " + " | ".join(f"{_label(n)}: rigidity error at t = {env.horizon} (cm)" for n in names) + " | transitions |"
        + (" SGP − vanilla, table tasks / tuning tasks at the chosen β (paired: mean ± s.e.; share of tasks SGP lower) |" if paired else ""),
        "|---|---|" + "---|" * (2 * len(names) + 1 + int(paired)),
    ]  # fmt: skip
    for s in seeds:
        methods = per_seed[s]["methods"]
        beta = f"{methods['sgp']['planner']['beta']:g}"
        if tuning:
            beta += f" (chosen in {tuning['per_seed'][s]['chosen_share']:.0%} of resamples)"
        summary.append(
            f"| {s} | {beta} | "
            + " | ".join(f"{methods[n]['final_marker_error_cm']:.2f} / {methods[n]['success_rate']:.0%}" for n in names)
            + " | " + " | ".join(f"{methods[n]['model_rigidity_error_per_step'][-1]:.2f}" for n in names)
            + f" | {per_seed[s]['transitions']} |"
            + (f" {_paired_text(per_seed[s]['sgp_minus_vanilla'])}"
               + (f" / {_paired_text(tuning['per_seed'][s]['chosen_minus_vanilla'])}" if tuning else "") + " |" if paired else "")
        )  # fmt: skip
    below = payload.get("sgp_below_vanilla_seeds")
    verdict = (
        f"SGP's mean achieved cost over all goals is below vanilla's on {len(below)} of {len(seeds)} seeds"
        + (f" ({', '.join(map(str, below))})" if below else "") + ".\n\n"
        if below is not None else ""
    )  # fmt: skip
    planner = per_seed[seeds[0]]["methods"][names[0]]["planner"]
    text = (
        f"### {payload['title']}\n\n"
        "Achieved cost (eq. 47: terminal Σ‖marker − goal marker‖² in cm², plus 0.1 Σ‖u‖²) of MPC on the simulated "
        f"true system, per seed (demonstrations, training and planning): mean ± std over {env.trials_per_goal} "
        "trials per goal (all goals: over every trial); mean over seeds: mean ± std over the seeds' means.\n\n"
        + "\n".join(lines) + "\n\n" + verdict
        + f"Per seed: SGP's β (chosen on the tuning tasks), final marker error and success (final markers within "
        f"{env.success_error:g} cm RMS of the goal markers) over all trials, and the rigid-constraint error of the "
        f"learned model's open-loop prediction of the executed actions at the last step (the true markers are rigid).\n\n"
        + "\n".join(summary) + "\n\n"
        f"MPC: {env.horizon} steps per trial, window T = {planner['mpc']['horizon']}, {planner['optimizer']['iterations']} "
        f"Adam iterations of lr {planner['optimizer']['lr']} per re-plan (action std units). Train overrides "
        f"{payload['train_overrides']}.\n\n"
    )  # fmt: skip
    if tuning:
        text += _tuning_markdown(tuning)
    text += _studies_markdown(per_seed, names)
    return text + provenance(payload) + "\n"


def _paired_text(d: dict) -> str:
    return f"{d['mean']:.1f} ± {d['standard_error']:.1f}; {d['lower_share']:.0%}"


def _tuning_markdown(tuning: dict) -> str:
    """The tuning curves: per seed and β, mean ± standard error of the achieved cost over the tuning trials,
    and the share of bootstrap resamples of those trials that choose each β."""
    first = next(iter(tuning["per_seed"].values()))
    betas = [row["beta"] for row in first["rows"]]
    lines = [
        "| seed | " + " | ".join(f"β = {b:g}" + (" (vanilla)" if b == 0 else "") for b in betas) + " |",
        "|---|" + "---|" * len(betas),
    ]
    for seed, sweep in tuning["per_seed"].items():
        cells = [
            (f"**{r['cost_achieved']:.1f} ± {r['standard_error']:.1f}**" if r["beta"] == sweep["chosen_beta"] and r["beta"] != 0
             else f"{r['cost_achieved']:.1f} ± {r['standard_error']:.1f}")
            for r in sweep["rows"]
        ]  # fmt: skip
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
        shares = ["–" if r["chosen_share"] is None else f"{r['chosen_share']:.0%}" for r in sweep["rows"]]
        lines.append(f"| {seed}: chosen in | " + " | ".join(shares) + " |")
    return (
        f"**SGP's β per seed**, chosen on a separate task set (task_seed={tuning['task_seed']}, "
        f"{tuning['trials_per_goal']} trials per goal; the table's tasks are task_seed=0) as the lowest mean "
        "achieved cost (bold). Tuning curve: mean ± standard error over the tuning trials; `chosen in`: the share "
        f"of {first['resamples']} bootstrap resamples of the tuning trials that choose each β.\n\n"
        + "\n".join(lines) + "\n\n"
    )  # fmt: skip


def _studies_markdown(per_seed: dict, names: list[str]) -> str:
    """Data stabilisation (Fig. 4B) and rollout stability (Fig. 4C/D), per seed."""
    stab_lines = [
        f"seed {s}: before {st['before']['mean']:.3f} ± {st['before']['std']:.3f}; after, learned score "
        f"{st['after_learned']['mean']:.3f} ± {st['after_learned']['std']:.3f} (markers moved {st['moved_learned_cm']:.2f} cm); "
        f"after, exact score of the training data {st['after_exact']['mean']:.3f} ± {st['after_exact']['std']:.3f} "
        f"(moved {st['moved_exact_cm']:.2f} cm)"
        for s, st in ((s, run["stabilisation"]) for s, run in per_seed.items())
    ]  # fmt: skip
    first = next(iter(per_seed.values()))
    stab = first["stabilisation"]
    steps = len(first["methods"][names[0]]["model_rigidity_error_per_step"])
    rigidity = [
        "| method | seed | " + " | ".join(f"t={t}" for t in range(steps)) + " |",
        "|---|---|" + "---|" * steps,
    ]
    model_error = []
    for n in names:
        for s, run in per_seed.items():
            m = run["methods"][n]
            rigidity.append(
                f"| {_label(n)} | {s} | "
                + " | ".join(f"{v:.2f}" for v in m["model_rigidity_error_per_step"])
                + " |"
            )
            model_error.append(f"{_label(n)} seed {s}: {m['model_error_per_step_cm'][-1]:.1f}")
    return (
        "**Data stabilisation (Fig. 4B)**: rigid-constraint error (mean over the 10 marker pairs of |distance − "
        f"true distance|, cm) of {stab['num_pairs']} held-out marker sets perturbed by N(0, {stab['perturbation_cm']:g}² cm²) "
        "per coordinate, before and after annealed ascent on the score (β = ∞, markers only): " + "; ".join(stab_lines) + ".\n\n"
        "**Rollout stability (Fig. 4C/D)**: rigid-constraint error (cm) of the learned model's open-loop prediction of "
        "each method's executed actions, by step (the true markers are rigid):\n\n" + "\n".join(rigidity) + "\n\n"
        f"Marker error of that prediction against the true states at t = {steps - 1} (cm, mean per marker): "
        + "; ".join(model_error) + ".\n\n"
    )  # fmt: skip


def plot_box_pushing(env, tasks, true_states: dict, stab_states: dict, methods: dict, tuning: dict | None):
    """Top: true box trajectories of every trial per goal (Fig. 4F–H) of the first seed, and the tuning curves
    of every seed. Bottom: stabilised marker sets (Fig. 4B) and the rigid-constraint error of the model's
    rollouts (Fig. 4C/D) of the first seed.

    Args:
        env (`BoxPushingEnv`): the table's env.
        tasks (`Tasks`): its tasks (the start outlines).
        true_states (`dict`): method → (B, T+1, 12) true states of its MPC trials.
        stab_states (`dict`): `clean`, `perturbed`, `learned` (and `exact`) → (K ≥ 2, 12) marker sets.
        methods (`dict`): method → its table plan's plain values (per_goal, per-step errors).
        tuning (`dict` or `None`): results.json's `tuning` (None: no tuning panel drawn).
    """
    import matplotlib.pyplot as plt

    colours = {"sgp": "tab:blue", "vanilla": "tab:red"}
    goals = env.task_goals()
    columns = max(4, len(env.goal_names) + 1)
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 8.2), squeeze=False)
    for column, goal in enumerate(env.goal_names):
        ax = axes[0, column]
        env.draw(ax)
        for name, states in true_states.items():
            for i in [i for i, g in enumerate(goals) if g == goal]:
                poses = env.pose_of(env.split(states[i])[0])
                corners = env.outline(poses[-1]).numpy()
                ax.plot(corners[:, 0], corners[:, 1], color=colours.get(name, "k"), lw=1.0, alpha=0.8)
                ax.plot(
                    poses[:, 0].numpy(), poses[:, 1].numpy(), color=colours.get(name, "k"), lw=0.7, alpha=0.6
                )
        start = env.outline(env.pose_of(env.split(tasks.x0[goals.index(goal)])[0])).numpy()
        ax.plot(start[:, 0], start[:, 1], color="grey", lw=1.0)
        ax.set_title(
            f"goal {goal}: "
            + ", ".join(
                f"{METHOD_LABELS.get(n, n)} {methods[n]['per_goal'][goal]['cost_achieved']['mean']:.1f}"
                for n in true_states
            ),
            fontsize=8,
        )
    ax = axes[0, len(env.goal_names)]
    for k, (seed, sweep) in enumerate((tuning or {}).get("per_seed", {}).items()):
        rows, colour = sweep["rows"], f"C{k}"
        sgp = [r for r in rows if r["beta"] > 0]
        ax.errorbar([r["beta"] for r in sgp], [r["cost_achieved"] for r in sgp],
                    [r["standard_error"] for r in sgp], color=colour, marker="o", capsize=3, label=f"SGP, seed {seed}")  # fmt: skip
        ax.axhline(rows[0]["cost_achieved"], color=colour, ls="--", lw=0.8, label=f"vanilla, seed {seed}")
        ax.plot([sweep["chosen_beta"]], [next(r["cost_achieved"] for r in sgp if r["beta"] == sweep["chosen_beta"])],
                marker="*", ms=14, color=colour)  # fmt: skip
    if tuning:
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_ylabel("achieved cost on the tuning tasks (mean ± s.e.)")
        ax.legend(fontsize=6)
        ax.set_title(f"tuning curves (task_seed={tuning['task_seed']}); ★ chosen", fontsize=8)
    else:
        ax.axis("off")
    ax = axes[1, 0]
    styles = {
        "perturbed": {"color": "tab:red", "marker": "x", "ls": "--"},
        "learned": {"color": "tab:blue", "marker": "o", "mfc": "none", "ls": "-"},
        "clean": {"color": "k", "marker": ".", "ls": ":", "lw": 0.8},
    }
    loop = [0, 1, 2, 3, 0, 4]  # the four corner markers as a closed outline, then the fifth
    for k in range(2):
        for name, style in styles.items():
            markers = env.split(stab_states[name][k])[0][loop].numpy()
            ax.plot(markers[:, 0], markers[:, 1], label=name if k == 0 else None, **style)
    ax.set_aspect("equal")
    ax.legend(fontsize=7)
    ax.set_title("Fig. 4B: perturbed markers → score ascent (β = ∞)", fontsize=8)
    for ax, key, ylabel, title in (
        (axes[1, 1], "model_rigidity_error_per_step", "rigid-constraint error (cm)", "Fig. 4C/D: predicted markers off rigid"),
        (axes[1, 2], "model_error_per_step_cm", "predicted vs true marker error (cm)", "model error along the executed actions"),
    ):  # fmt: skip
        for name, m in methods.items():
            ax.plot(m[key], marker="o", color=colours.get(name, "k"), label=METHOD_LABELS.get(name, name))
        ax.set_xlabel("step t of the model's open-loop rollout")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.set_title(title, fontsize=8)
    for ax in axes[1, 3:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
