"""Failure-isolated Hydra sweeps: in a `train.py -m` sweep a failing job records its failure in its own
folder (status.json: status, overrides, the error line) and the sweep goes on to the next job; when the
sweep ends, `FailedJobsCallback` lists the failed jobs and ends the command with exit code 1.

A single run (no -m) still stops at once with one `error:` line and exit code 2 (utils.clean_errors).
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.experimental.callback import Callback

from sgp_lightning.utils import _find_user_error, log, write_json

STATUS_FILE = "status.json"  # {"status": "finished" | "failed", "overrides": [...], "error": "..."}


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_sweep_job(job: Callable[[], float | None]) -> float | None:
    """Run one job of a sweep. Its status (and, on failure, the error line) goes to status.json in the job's
    output folder; a failure returns NaN to the sweeper instead of ending the sweep."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    status = {"overrides": list(hydra_cfg.overrides.task)}
    out = Path(hydra_cfg.runtime.output_dir)
    try:
        value = job()
    except Exception as err:  # noqa: BLE001 - any failure of one job is recorded; the sweep goes on
        user_error = _find_user_error(err)
        line = str(user_error) if user_error is not None else f"{type(err).__name__}: {err}"
        if user_error is None:  # a bug, not bad input: keep the traceback in the job's log
            log.error("".join(traceback.format_exception(err)))
        print(f"error: job {hydra_cfg.job.num} ({' '.join(status['overrides'])}): {line}", file=sys.stderr)
        write_json(out / STATUS_FILE, {"status": "failed", **status, "error": line})
        return math.nan
    write_json(out / STATUS_FILE, {"status": "finished", **status})
    return value


def failed_jobs(sweep_dir: str | Path) -> list[dict]:
    """The status.json of every failed job under a sweep folder, each with its folder as "job"."""
    failed = []
    for path in sorted(Path(sweep_dir).glob(f"**/{STATUS_FILE}")):
        status = json.loads(path.read_text())
        if status.get("status") == "failed":
            failed.append({**status, "job": str(path.parent)})
    return failed


class FailedJobsCallback(Callback):
    """At the end of a multirun: list the failed jobs and exit with code 1 if there are any."""

    def on_multirun_end(self, config, **kwargs) -> None:
        failed = failed_jobs(config.hydra.sweep.dir)
        if failed:
            for job in failed:
                print(f"failed: {job['job']} ({' '.join(job['overrides'])}): {job['error']}", file=sys.stderr)
            print(f"error: {len(failed)} job(s) of the sweep failed; the others finished", file=sys.stderr)
            sys.exit(1)
