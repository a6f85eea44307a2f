"""Failure-isolated Hydra sweeps: in a `train.py -m` sweep a failing job records its failure in its own
folder (status.json: status, overrides, the error line) and the sweep goes on to the next job; when the
sweep ends, `FailedJobsCallback` lists the failed jobs and ends the command with exit code 1.

This holds for every launcher that runs the job function in a Python process (basic, joblib, submitit
local or SLURM: each job writes its own status.json into the sweep folder) and for every sweeper: a failed
job returns None, which the basic sweeper ignores and the Optuna sweeper records as a failed trial. A job
killed from outside (time limit, out of memory) cannot write its end: its status.json stays "started", the
launcher itself raises (non-zero exit), and `failed_jobs` lists it as unfinished.

A single run (no -m) still stops at once with one `error:` line and exit code 2 (utils.clean_errors).
"""

from __future__ import annotations

import atexit
import functools
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.experimental.callback import Callback

from sgp_lightning.utils import _find_user_error, log, write_json

STATUS_FILE = (
    "status.json"  # {"status": "started" | "finished" | "failed", "overrides": [...], "error": "..."}
)
UNFINISHED = "no end recorded: the job is still running, or was killed (time limit, out of memory)"


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_sweep_job(job: Callable[[], float | None]) -> float | None:
    """Run one job of a sweep. Its status (and, on failure, the error line) goes to status.json in the job's
    output folder: "started" before the job, then "finished" or "failed".

    Args:
        job: the job itself; returns the value for the sweeper (train.py's `optimized_metric`) or None.

    Returns:
        The job's value, or None when it failed: the sweep goes on (a NaN would end an Optuna sweep, whose
        study refuses NaN values; None makes the trial a failed one).
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    status = {"overrides": list(hydra_cfg.overrides.task)}
    out = Path(hydra_cfg.runtime.output_dir)
    write_json(out / STATUS_FILE, {"status": "started", **status})
    try:
        value = job()
    except Exception as err:  # noqa: BLE001 - any failure of one job is recorded; the sweep goes on
        user_error = _find_user_error(err)
        line = str(user_error) if user_error is not None else f"{type(err).__name__}: {err}"
        if user_error is None:  # a bug, not bad input: keep the traceback in the job's log
            log.error("".join(traceback.format_exception(err)))
        print(f"error: job {hydra_cfg.job.num} ({' '.join(status['overrides'])}): {line}", file=sys.stderr)
        write_json(out / STATUS_FILE, {"status": "failed", **status, "error": line})
        return None
    write_json(out / STATUS_FILE, {"status": "finished", **status})
    return value


def job_statuses(sweep_dir: str | Path) -> list[dict]:
    """The status.json of every job under a sweep folder, each with its folder as "job"; a job that did not
    finish (failed, or started with no end recorded) has an "error" line."""
    statuses = []
    for path in sorted(Path(sweep_dir).glob(f"**/{STATUS_FILE}")):
        status = json.loads(path.read_text())
        if status.get("status") != "finished":
            status = {"error": UNFINISHED, **status}
        statuses.append({**status, "job": str(path.parent)})
    return statuses


def failed_jobs(sweep_dir: str | Path) -> list[dict]:
    """The status.json of every job under a sweep folder that did not finish (see `job_statuses`)."""
    return [status for status in job_statuses(sweep_dir) if status["status"] != "finished"]


def report_failed_jobs(sweep_dir: str | Path) -> int:
    """Print one `failed:` line per job under `sweep_dir` that did not finish, then the counts; returns the
    number of failed jobs."""
    statuses = job_statuses(sweep_dir)
    failed = [status for status in statuses if status["status"] != "finished"]
    for job in failed:
        print(f"failed: {job['job']} ({' '.join(job['overrides'])}): {job['error']}", file=sys.stderr)
    if failed:
        finished = len(statuses) - len(failed)
        print(f"error: {len(failed)} job(s) of the sweep failed; {finished} finished", file=sys.stderr)
    return len(failed)


class FailedJobsCallback(Callback):
    """At the end of a multirun: list the failed jobs and exit with code 1 if there are any.

    When the sweeper or launcher raises instead of ending (an Optuna study whose trials all failed, a job
    killed at its time limit), Hydra skips `on_multirun_end` and exits 1 with that error; the list is then
    printed as the process exits.
    """

    def on_multirun_start(self, config, **kwargs) -> None:
        self._at_exit = functools.partial(report_failed_jobs, str(config.hydra.sweep.dir))
        atexit.register(self._at_exit)

    def on_multirun_end(self, config, **kwargs) -> None:
        if getattr(self, "_at_exit", None) is not None:
            atexit.unregister(self._at_exit)
        if report_failed_jobs(config.hydra.sweep.dir):
            sys.exit(1)
