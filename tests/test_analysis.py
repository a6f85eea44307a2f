"""The paper's analyses as tools (issue 6): Fig. 1's 1-D comparison of uncertainty metrics."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from sgp_lightning.analysis.uncertainty_1d import gp_variance, run
from tests.conftest import CONF, run_cli


def test_gp_variance_vanishes_at_data_and_reaches_the_prior_far_away():
    data = torch.tensor([[-1.0], [0.5]])
    variance = gp_variance(torch.tensor([[-1.0], [0.5], [10.0]]), data, length=0.3, signal=2.0, noise=1e-6)
    torch.testing.assert_close(variance, torch.tensor([0.0, 0.0, 4.0]), atol=1e-4, rtol=0)


def test_distance_to_data_lands_runs_on_data_and_the_ensemble_does_not():
    """Gradient descent on f_θ + βμ²: with the exact smoothed distance (σ annealed) nearly every run ends on
    a sample; with a 2-member ensemble many runs end away from the data (Fig. 1's claim)."""
    settings = OmegaConf.load(CONF / "reproduce" / "uncertainty_1d.yaml").settings
    settings.num_starts, settings.steps = 200, 800
    metrics = run(settings)["metrics"]
    assert metrics["distance"]["landed_on_data"] >= 0.95
    assert metrics["ensemble"]["landed_on_data"] <= metrics["distance"]["landed_on_data"] - 0.3
    # Landing on data means the learned cost is trustworthy there: learned ≈ true at the end.
    assert abs(metrics["distance"]["model_cost"] - metrics["distance"]["true_cost"]) < 0.05


def test_reproduce_uncertainty_1d(tmp_path):
    proc = run_cli(
        "reproduce.py", "uncertainty_1d", f"output_dir={tmp_path}",
        "reproduce.settings.num_starts=50", "reproduce.settings.steps=100", "reproduce.settings.fit_steps=100",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert set(payload["metrics"]) == {"distance", "ensemble", "gp"}
    assert (tmp_path / "uncertainty_1d.png").is_file()
    assert "| distance to data" in (tmp_path / "table.md").read_text()
