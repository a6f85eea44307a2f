import math

import pytest
import torch

from sgp_lightning import SGPError
from sgp_lightning.schedules import NoiseSchedule


def test_geometric_matches_paper_schedule():
    s = NoiseSchedule.geometric(50.0, 0.01, 232)
    assert len(s) == 232
    assert s.sigmas[0].item() == pytest.approx(50.0, rel=1e-6)
    assert s.sigmas[-1].item() == pytest.approx(0.01, rel=1e-6)
    ratios = s.sigmas[1:].double() / s.sigmas[:-1].double()
    assert torch.allclose(ratios, torch.full_like(ratios, (0.01 / 50) ** (1 / 231)), rtol=1e-5)


def test_cosine_matches_formula():
    s = NoiseSchedule.cosine(0.2, 0.01, 10)
    k = torch.arange(10, dtype=torch.float64)
    expected = 0.01 + 0.19 * 0.5 * (1 + torch.cos(math.pi * k / 9))
    assert torch.allclose(s.sigmas.double(), expected, atol=1e-7)
    assert s.sigmas[0].item() == pytest.approx(0.2) and s.sigmas[-1].item() == pytest.approx(0.01)


def test_level_at_walks_from_start_to_last_in_equal_shares():
    s = NoiseSchedule.geometric(1.0, 0.1, 5)
    levels = [s.level_at(i, 100) for i in range(100)]
    assert levels[0] == 0 and levels[-1] == 4
    assert all(b - a in (0, 1) for a, b in zip(levels, levels[1:], strict=False))
    assert [levels.count(k) for k in range(5)] == [20] * 5
    started = [s.level_at(i, 30, start_level=2) for i in range(30)]
    assert started[0] == 2 and started[-1] == 4 and [started.count(k) for k in (2, 3, 4)] == [10] * 3


@pytest.mark.parametrize(
    "sigmas", [[0.1, 0.2, 0.3], [0.3, 0.3], [0.3, -0.1], []], ids=["increasing", "flat", "negative", "empty"]
)
def test_bad_schedules_are_rejected(sigmas):
    with pytest.raises(SGPError):
        NoiseSchedule(sigmas)


def test_build_rejects_increasing_range_and_unknown_kind():
    with pytest.raises(SGPError, match="larger than sigma_min"):
        NoiseSchedule.build("geometric", 0.01, 0.5, 10)
    with pytest.raises(SGPError, match="unknown noise schedule"):
        NoiseSchedule.build("linear", 0.5, 0.01, 10)


def test_few_iterations_still_end_at_the_last_level():
    s = NoiseSchedule.geometric(1.0, 0.1, 8)
    assert [s.level_at(i, 2) for i in range(2)] == [0, 7]
    assert [s.level_at(i, 3, start_level=4) for i in range(3)] == [4, 6, 7]  # 4 levels, 3 iterations
    assert s.level_at(0, 1) == 7
    big = NoiseSchedule.geometric(50.0, 0.01, 232)
    assert big.level_at(49, 50) == 231
