"""Small helpers for the entry points: thread count, clean errors, JSON."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import torch

from sgp_lightning.errors import SGPError

log = logging.getLogger("sgp_lightning")


def set_threads(num_threads: int | None) -> None:
    """Small MLPs on a shared CPU run far faster on 1 thread than on 2 (thread contention)."""
    if num_threads:
        torch.set_num_threads(int(num_threads))


@contextlib.contextmanager
def clean_errors():
    """Bad user input ends the program with one line on stderr and exit code 2, not a traceback."""
    try:
        yield
    except Exception as err:
        user_error = _find_user_error(err)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr, flush=True)
        sys.exit(2)


def _find_user_error(err: BaseException | None) -> SGPError | None:
    """The SGPError behind `err`, also when Hydra's instantiate or Lightning re-raised it wrapped."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SGPError):
            return err
        # ddp_spawn re-raises a child's exception as text (ProcessRaisedException) holding its traceback.
        marker = "sgp_lightning.errors.SGPError: "
        if type(err).__name__ == "ProcessRaisedException" and marker in str(err):
            return SGPError(str(err).rsplit(marker, 1)[1].strip().splitlines()[0])
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value)}")


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path` and rename it into place, so a run killed meanwhile
    never leaves a half-written file that a later run would read as valid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only left if the write or rename failed
    return path


def write_json(path: str | Path, payload: dict) -> Path:
    """`payload` as indented JSON (tensors as lists), written atomically (write_text)."""
    return write_text(path, json.dumps(payload, indent=2, default=_json_default, allow_nan=True))


def cli_options(defaults: dict, argv: list[str] | None = None):
    """The `key=value` options of a module command (`python -m …`) merged over `defaults`, as an OmegaConf
    config; an option that is not in `defaults` is bad input (SGPError naming the valid ones)."""
    from omegaconf import OmegaConf

    cli = OmegaConf.from_cli(argv) if argv is not None else OmegaConf.from_cli()
    unknown = sorted(set(cli.keys()) - set(defaults))
    if unknown:
        raise SGPError(f"unknown options {unknown}; options are {sorted(defaults)}")
    return OmegaConf.merge(OmegaConf.create(defaults), cli)


def machine_info() -> dict:
    """Where a result was measured, for results tables."""
    import platform

    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            processor = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "processor": processor,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
