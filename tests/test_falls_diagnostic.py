"""scripts/d4rl_falls.py: which health limit each fallen D4RL episode crossed, and whether the model foresaw it."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "d4rl_falls.py"
spec = importlib.util.spec_from_file_location("d4rl_falls", SCRIPT)
falls = importlib.util.module_from_spec(spec)
spec.loader.exec_module(falls)

OBS, STEPS, HORIZON = 17, 10, 3


def walker_episodes(lengths, final_z_pitch, predicted_fall_at=None):
    """Walker2d-like episodes standing at z = 1.2, pitch 0.1, forward velocity 2 until they end; each ends in
    `final_z_pitch[e]`. `predicted_fall_at[e]`: a step whose re-plan predicts a state at z = 0.5 (None: never)."""
    lengths = np.asarray(lengths)
    episodes = len(lengths)
    states = np.zeros((episodes, STEPS + 1, OBS), dtype=np.float32)
    states[..., 0], states[..., 1], states[..., 8] = 1.2, 0.1, 2.0
    states[np.arange(episodes), lengths, :2] = final_z_pitch
    planned = np.repeat(states[:, :STEPS, None], HORIZON + 1, 2)  # every plan predicts standing still
    for e, step in enumerate(predicted_fall_at or []):
        if step is not None:
            planned[e, step, 2, 0] = 0.5
    after = np.arange(STEPS + 1)[None] > lengths[:, None]
    states[after] = np.nan
    planned[after[:, :STEPS] | (np.arange(STEPS)[None] == lengths[:, None])] = np.nan
    return {"true_states": states, "lengths": lengths.astype(np.int64), "planned_states": planned}


def test_limits_are_gymnasiums_and_halfcheetah_is_refused():
    np.testing.assert_allclose(falls.limits("walker2d"), [[0.8, 2.0], [-1.0, 1.0]])
    with pytest.raises(SystemExit, match="never terminates"):
        falls.limits("halfcheetah")


def test_falls_are_classified_by_the_limit_crossed_and_by_whether_a_late_plan_predicted_them():
    bounds = falls.limits("walker2d")
    arrays = walker_episodes(
        lengths=[10, 4, 6, 7],  # 10 = the step limit: episode 0 did not fall
        final_z_pitch=[(1.2, 0.1), (1.0, 1.3), (0.6, 0.2), (1.1, -1.2)],
        # episode 1's fall is predicted by the plan one step before it (within H); episode 2's only by a plan
        # 5 steps before (outside the last H steps), so it is not counted as foreseen; episode 3: never.
        predicted_fall_at=[None, 3, 1, None],
    )
    report = falls.method_falls(arrays, bounds, velocity_index=8)
    assert report["fell"] == 3 and report["fall_steps"] == [4, 6, 7]
    assert report["cause"] == {"height below": 1, "pitched backward": 1, "pitched forward": 1}
    assert report["foreseen"] == 1
    assert [f["foreseen"] for f in report["falls"]] == [True, False, False]
    assert [f["warning_steps"] for f in report["falls"]] == [1, None, None]
    assert [f["cause"] for f in report["falls"]] == ["pitched forward", "height below", "pitched backward"]
    assert report["falls"][1]["true_height_pitch"] == [0.6, 0.2]
    # re-plans predicting a fall: 2 of the 10 + 4 + 6 + 7 = 27 steps run
    assert report["plans_predicting_a_fall"] == pytest.approx(2 / 27)
    assert report["forward_velocity"] == pytest.approx(2.0)
    assert report["pitch_before_falls"] == pytest.approx(0.1)


def test_a_policy_without_plans_gets_no_foresight_columns_and_the_cli_writes_json(tmp_path, capsys):
    arrays = walker_episodes(lengths=[10, 5], final_z_pitch=[(1.2, 0.1), (0.7, 0.0)])
    planner_arrays = walker_episodes(lengths=[10, 10], final_z_pitch=[(1.2, 0.1), (1.2, 0.1)])
    path = tmp_path / "trajectories.npz"
    entries = {f"bc/{k}": v for k, v in arrays.items() if k != "planned_states"}
    entries.update({f"sgp/{k}": v for k, v in planner_arrays.items()})
    np.savez(path, **entries)
    falls.main([str(path), "--env", "walker2d", "--output", str(tmp_path / "falls.json")])
    report = json.loads((tmp_path / "falls.json").read_text())["methods"]
    assert report["bc"]["fell"] == 1 and "foreseen" not in report["bc"]
    assert report["sgp"]["fell"] == 0 and report["sgp"]["foreseen"] == 0 and report["sgp"]["falls"] == []
    assert "| bc | 1 / 2 | height below 1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no method"):
        falls.main([str(path), "--env", "walker2d", "--methods", "iql", "--output", str(tmp_path / "x.json")])
