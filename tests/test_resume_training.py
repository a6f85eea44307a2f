"""Training killed with SIGKILL mid-run resumes from last.ckpt to the same final weights as an
uninterrupted run (the checkpoint carries the torch RNG that the losses' noise draws from)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, TINY

EPOCHS = 4
OVERRIDES = [
    *[o for o in TINY if not o.startswith(("trainer.max_epochs", "domain.datamodule.num_samples"))],
    "domain.datamodule.num_samples=20000",  # epochs long enough to be killed in the middle of one
    f"trainer.max_epochs={EPOCHS}",
    "callbacks.planning.every_n_epochs=100",  # plan after the last epoch only
    "callbacks.score_field=null",
    "seed=3",
]


def _train(out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    args = [sys.executable, "train.py", *OVERRIDES, f"paths.output_dir={out}", *extra]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _weights(out):
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], checkpoint["epoch"]


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    killed = tmp_path / "killed"
    proc = _train(killed)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), "no checkpoint was written"
    time.sleep(1.0)  # into the next epoch
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, epoch_at_kill = _weights(killed)
    assert epoch_at_kill < EPOCHS - 1

    resumed = _train(killed, f"ckpt_path={last}")
    uninterrupted = _train(tmp_path / "uninterrupted")
    for run in (resumed, uninterrupted):
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    weights, epoch = _weights(killed)
    reference, reference_epoch = _weights(tmp_path / "uninterrupted")
    assert epoch == reference_epoch == EPOCHS - 1
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
