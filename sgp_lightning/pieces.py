"""Resumable reproductions: each finished piece of a `reproduce.py NAME output_dir=DIR` run (a seed's
training, each tuning plan, each method's plan) is marked in its folder with a key of the settings that
produced it. Running the same command again reuses every piece whose key still matches, so a reproduction
killed after 50 of its 65 minutes loses only the piece it was in, and a changed override re-runs only the
pieces it changes. A training run that was cut off resumes from its `last.ckpt`. `reproduce.fresh=true`
ignores what is there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from sgp_lightning.errors import require
from sgp_lightning.utils import log, write_text

FINISHED = ".finished"  # the key of the settings that produced a finished piece
STARTED = ".started"  # the key of a training run that began (its last.ckpt can be resumed)


# conf/callbacks/default.yaml's checkpoint writers: they choose which files a training leaves, not what it learns
CHECKPOINT_WRITERS = ("model_checkpoint", "last_checkpoint")


def _settings(config: DictConfig) -> dict:
    """A config's resolved values without `paths`, `hydra`, `progress`, `video` and the checkpoint writers
    (where and how this process writes and reports, not what it does)."""
    config = config.copy()
    with open_dict(config):
        for key in ("hydra", "progress", "video"):  # how this process reports, not what it does
            config.pop(key, None)
        if "paths" in config:  # the folder is the piece's own (or the launching run's), not a setting
            config.paths = {"output_dir": "<output_dir>"}
        for key in CHECKPOINT_WRITERS if isinstance(config.get("callbacks"), DictConfig) else ():
            config.callbacks.pop(key, None)
    return OmegaConf.to_container(config, resolve=True)


def settings_key(*settings) -> str:
    """A short hash of settings (configs are resolved first), e.g. a piece's config and its inputs' keys."""
    plain = [_settings(s) if isinstance(s, DictConfig) else s for s in settings]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def is_finished(folder: Path, key: str, marker: str = FINISHED) -> bool:
    """Whether the piece in `folder` (its `marker` file) finished with the settings of `key`."""
    return _read(Path(folder) / marker) == key


def mark_finished(folder: Path, key: str, marker: str = FINISHED) -> None:
    write_text(Path(folder) / marker, key)


def train_piece(
    run_dir: Path, train_cfg: DictConfig, fresh: bool = False, reuse_only: bool = False
) -> tuple[str, dict | None]:
    """Train `train_cfg` into `run_dir` unless a run with the same settings finished there.

    Returns (the training's key, train()'s objects, or None when the finished run was reused). A run with
    the same settings that was cut off resumes from its last.ckpt; a run with other settings (or `fresh`)
    is cleared first, so its checkpoints are never mistaken for this one's. `reuse_only`: the caller trained
    it already (several processes may read it at once): reuse the finished run as it is, never train."""
    from sgp_lightning.train import last_checkpoint, train

    run_dir = Path(run_dir)
    key = settings_key(train_cfg)
    last = last_checkpoint(run_dir)
    if reuse_only:
        require(
            is_finished(run_dir, key) and last.is_file(),
            f"{run_dir} holds no finished training with these settings, although this reproduction trained it",
        )
        return key, None
    finished = not fresh and is_finished(run_dir, key) and last.is_file()
    if finished and ended_there(last, train_cfg.trainer):
        log.info(f"reusing the finished training in {run_dir}")
        return key, None
    if finished:  # its last.ckpt is an earlier epoch: the final weights were never written, so train again
        log.warning(f"{last} is not the final state of the finished training in {run_dir}: training it again")
    resume = not fresh and not finished and _read(run_dir / STARTED) == key and last.is_file()
    if not resume:  # everything in the folder (checkpoints, plans, logs) came from another training
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
    write_text(run_dir / STARTED, key)
    if resume:
        log.info(f"resuming the unfinished training in {run_dir} from {last}")
        train_cfg = train_cfg.copy()
        train_cfg.ckpt_path = str(last)
    _, trained = train(train_cfg)
    mark_finished(run_dir, key)
    return key, trained


def ended_there(checkpoint: Path, trainer: DictConfig) -> bool:
    """Whether `checkpoint` holds the state a training with `trainer`'s settings ends in: its last step
    (`max_steps`) or its last epoch (`max_epochs`, with Lightning's defaults: 1000 when neither is set,
    unbounded when only `max_steps` or `max_time` is). A training with no step or epoch bound ends by other
    means, so its finished marker is trusted. Runs made before last.ckpt was written after every epoch
    (Lightning >= 2.6 copied it only when val/loss improved) may hold an earlier, better epoch."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    max_steps, max_epochs = trainer.get("max_steps") or -1, trainer.get("max_epochs")
    if max_epochs is None:  # as Lightning's Trainer fills it in (a max_time Timer lifts the epoch bound)
        max_epochs = -1 if max_steps > 0 or trainer.get("max_time") else 1000
    if max_steps > 0 and state["global_step"] >= max_steps:
        return True
    if max_epochs < 0:
        return max_steps < 0
    return state["epoch"] + 1 >= max_epochs


def reuse_or_train(
    run_dir: Path, train_cfg: DictConfig, fresh: bool = False, reuse_only: bool = False
) -> tuple[str, dict]:
    """train_piece, and for a reused training the objects train() would have returned: the system from its
    last.ckpt, the env and the datamodule (its data drawn again from the seed). Also `ckpt_path`."""
    from sgp_lightning.models import SGPSystem
    from sgp_lightning.train import instantiate_env_and_data, last_checkpoint

    key, trained = train_piece(run_dir, train_cfg, fresh, reuse_only)
    last = last_checkpoint(run_dir)
    if trained is None:
        env, datamodule = instantiate_env_and_data(train_cfg)
        datamodule.setup("fit")
        system = SGPSystem.load_from_checkpoint(last)
        if system.distance is not None:  # its reference pairs are not in the checkpoint
            system.distance.draw_reference(datamodule)
        trained = {"system": system, "env": env, "datamodule": datamodule}
    return key, {**trained, "ckpt_path": last}


def plan_piece(plan_dir: Path, plan_cfg: DictConfig, depends_on: str, fresh: bool = False) -> dict:
    """plan() with `plan_cfg` into `plan_dir`, or its results.json when the same settings (and the same
    training, `depends_on`: its key) finished there."""
    from sgp_lightning.plan import plan

    return json_piece(plan_dir, settings_key(plan_cfg, depends_on), lambda: plan(plan_cfg), fresh)


def json_piece(folder: Path, key: str, compute, fresh: bool = False) -> dict:
    """`compute()`, a dict of plain values kept in `folder`/results.json, or that file when a piece with the
    settings of `key` finished there. Returns the dict as results.json holds it, either way."""
    from sgp_lightning.utils import write_json

    folder = Path(folder)
    if not fresh and is_finished(folder, key) and (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())
    (folder / FINISHED).unlink(missing_ok=True)
    payload = json.loads(write_json(folder / "results.json", compute()).read_text())  # as a reuse reads it
    mark_finished(folder, key)
    return payload


@dataclass(frozen=True)
class Task:
    """One piece of work for [`run_tasks`]: `function(*results of the tasks in after)`. `function` must be
    picklable (a module-level function, or a functools.partial of one over plain values)."""

    key: Hashable  # names the task and its result
    function: Callable
    after: tuple = ()  # keys of the tasks whose results it takes, in order; they must come before it


def run_tasks(tasks: list[Task], workers: int = 1, progress: bool = False) -> dict:
    """Run `tasks` and return their results by key: in this process in list order, or in `workers` processes
    (reproduce.workers; each sets its own torch threads), where a free worker takes the first task in the list
    whose `after` tasks are done. So list order is priority: trainings first, then the plans each one allows,
    and a worker plans the seeds already trained while the other trains the last one. Results are the same
    for any number of workers, since every task is seeded on its own. If a task fails, the tasks already
    running finish (their pieces are kept) and its error is raised."""
    require(int(workers) >= 1, f"reproduce.workers must be ≥ 1, got {workers}")
    from tqdm.auto import tqdm

    listed = set()
    for task in tasks:
        if task.key in listed or not listed.issuperset(task.after):
            raise ValueError(f"task {task.key!r} is listed twice or before a task it takes a result from")
        listed.add(task.key)
    results = {}
    with tqdm(total=len(tasks), desc="runs", disable=not progress) as bar:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                results[task.key] = task.function(*(results[key] for key in task.after))
                bar.update()
        else:
            _run_on_workers(tasks, workers, results, bar.update)
    return results


def _run_on_workers(tasks: list[Task], workers: int, results: dict, finished_one: Callable) -> None:
    """[`run_tasks`] in `workers` processes: fills `results`, calling `finished_one()` after each task."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state shared with this one
    waiting, running = list(tasks), {}
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=_start_worker) as pool:
        while waiting or running:
            ready = [task for task in waiting if results.keys() >= set(task.after)]
            for task in ready[: workers - len(running)]:
                waiting.remove(task)
                running[pool.submit(task.function, *(results[key] for key in task.after))] = task.key
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future)] = future.result()
                finished_one()


def map_runs(function, items: list, workers: int = 1, progress: bool = False) -> list:
    """function(item) for each item (a seed, a dataset and seed), as [`run_tasks`] runs independent tasks:
    in this process, or in `workers` processes. `function` and `items` must be picklable."""
    results = run_tasks(
        [Task(i, functools.partial(function, item)) for i, item in enumerate(items)], workers, progress
    )
    return [results[i] for i in range(len(items))]


def _start_worker() -> None:
    """A worker composes configs like the main process: Hydra initialized on conf/ for its lifetime."""
    from hydra import initialize_config_dir

    from sgp_lightning.planning.config import CONF_DIR

    initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3").__enter__()
