"""The one rule that chooses a tuned β (reproduce's tuning and the analyses' tune_open_loop)."""

import math

from sgp_lightning.tables import best_beta

BETAS = [0.1, 1.0, 10.0]


def test_best_beta_is_the_best_value_the_first_of_equals_and_never_a_diverged_plan():
    costs = {"0.1": 0.5, "1": 0.2, "10": 0.3}
    assert best_beta(BETAS, costs) == 1.0  # lowest (achieved cost)
    assert best_beta(BETAS, costs, "max") == 0.1  # highest (a score)
    assert best_beta(BETAS, {"0.1": 0.2, "1": 0.2, "10": 0.3}) == 0.1  # the first listed of equals
    diverged = {"0.1": math.nan, "1": 0.4, "10": 0.3}
    assert best_beta(BETAS, diverged) == 10.0 and best_beta(BETAS, diverged, "max") == 1.0
