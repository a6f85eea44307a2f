"""scripts/d4rl_paired_comparison.py: paired per-episode differences of two methods of a D4RL table."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "d4rl_paired_comparison.py"
spec = importlib.util.spec_from_file_location("d4rl_paired_comparison", SCRIPT)
paired = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired)


def write_seed(
    runs: Path,
    seed: int,
    scores: dict[str, list[float]],
    layout: str = "plan/methods",
    lengths: dict[str, list[int]] | None = None,
    episode_steps: int = 1000,
) -> None:
    """One seed's episode results as a reproduction writes them; `lengths` adds each episode's length."""
    folder = runs / f"seed_{seed}" / layout
    folder.mkdir(parents=True)
    methods = {
        name: {"per_episode": [{"normalized_score": s} for s in values]} for name, values in scores.items()
    }
    results = {"methods": methods}
    if lengths is not None:
        for name, values in lengths.items():
            for episode, length in zip(methods[name]["per_episode"], values, strict=True):
                episode["length"] = length
        results["episode_steps"] = episode_steps
    (folder / "results.json").write_text(json.dumps(results))


def test_differences_pair_episodes_within_each_seed(tmp_path):
    write_seed(tmp_path, 0, {"sgp": [10.0, 12.0, 8.0], "bc": [11.0, 11.0, 11.0]})  # differences −1, 1, −3
    write_seed(tmp_path, 1, {"sgp": [5.0, 5.0, 5.0], "bc": [3.0, 4.0, 5.0]}, layout="plan_last")  # 2, 1, 0
    result = paired.compare(tmp_path, "sgp", "bc", "last", resamples=2000, seed=0)
    assert result["per_seed"]["0"] == {"sgp": 10.0, "bc": 11.0, "difference": -1.0}
    assert result["per_seed"]["1"]["difference"] == 1.0
    assert result["mean_difference"] == 0.0
    assert result["episodes_a_at_least_b"] == pytest.approx(4 / 6)
    low, high = result["ci95_episodes"]
    assert -3.0 < low < 0.0 < high < 2.0  # the extremes need every resampled pair at one end
    assert result["ci95_seeds_and_episodes"][0] <= low


def test_equal_differences_give_a_point_interval(tmp_path):
    for seed in (0, 1):
        write_seed(tmp_path, seed, {"sgp": [4.0, 6.0], "bc": [3.5, 5.5]})
    result = paired.compare(tmp_path, "sgp", "bc", "last", resamples=100, seed=3)
    assert result["ci95_episodes"] == pytest.approx([0.5, 0.5])
    assert result["ci95_seeds_and_episodes"] == pytest.approx([0.5, 0.5])


def test_a_missing_method_or_folder_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no seed_N/plan/methods/results.json"):
        paired.compare(tmp_path, "sgp", "bc", "last", resamples=10, seed=0)
    write_seed(tmp_path, 0, {"sgp": [1.0]})
    with pytest.raises(SystemExit, match="seed 0 has no method 'bc'"):
        paired.compare(tmp_path, "sgp", "bc", "last", resamples=10, seed=0)


def test_unequal_episode_counts_are_refused(tmp_path):
    write_seed(tmp_path, 0, {"sgp": [1.0, 2.0], "bc": [1.0]})
    with pytest.raises(SystemExit, match="same number of episodes"):
        paired.compare(tmp_path, "sgp", "bc", "last", resamples=10, seed=0)


def test_early_ends_are_counted_and_left_out_of_the_full_length_difference(tmp_path):
    # Seed 0: A falls in episode 1 (scoring 2 instead of about B's 10); seed 1: B falls in episode 0.
    write_seed(tmp_path, 0, {"sgp": [11.0, 2.0], "bc": [10.0, 10.0]}, lengths={"sgp": [50, 20], "bc": [50, 50]},
               episode_steps=50)  # fmt: skip
    write_seed(tmp_path, 1, {"sgp": [9.0, 12.0], "bc": [1.0, 9.0]}, lengths={"sgp": [50, 50], "bc": [7, 50]},
               episode_steps=50)  # fmt: skip
    result = paired.compare(tmp_path, "sgp", "bc", "last", resamples=10, seed=0)
    assert result["ended_early"] == {"sgp": 1, "bc": 1}
    assert result["pairs_both_full_length"] == 2
    assert result["difference_both_full_length"] == pytest.approx((1.0 + 3.0) / 2)
    assert result["mean_difference"] == pytest.approx(((1.0 - 8.0) / 2 + (8.0 + 3.0) / 2) / 2)


def test_files_without_lengths_report_no_early_ends(tmp_path):
    write_seed(tmp_path, 0, {"sgp": [1.0], "bc": [2.0]})
    assert "ended_early" not in paired.compare(tmp_path, "sgp", "bc", "last", resamples=10, seed=0)
