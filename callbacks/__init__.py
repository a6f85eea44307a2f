"""Lightning callbacks: plan during validation, and score-field images."""

from callbacks.planning import PlanningCallback
from callbacks.score_field import ScoreFieldCallback

__all__ = ["PlanningCallback", "ScoreFieldCallback"]
