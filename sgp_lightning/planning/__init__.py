"""Planning: planner objects (built from conf/planner/ with `_target_`) → shooting problem → penalty;
the Controller for receding-horizon control; evaluation on the true env."""

from sgp_lightning.planning.controller import Controller
from sgp_lightning.planning.evaluate import Evaluation, plan_and_evaluate
from sgp_lightning.planning.evaluators import (
    Evaluator,
    HeldOutEpisodes,
    MPCEpisodes,
    OpenLoopTasks,
    make_evaluator,
)
from sgp_lightning.planning.penalties import (
    DistancePenalty,
    EnsemblePenalty,
    NoPenalty,
    Penalty,
    ScorePenalty,
    parse_beta,
)
from sgp_lightning.planning.planners import (
    AdamSettings,
    CEMPlanner,
    CEMSettings,
    GradientPlanner,
    MPCSettings,
    Planner,
    PolicyPlanner,
    StackedGradientPlanner,
    make_planner,
    stack_planners,
)
from sgp_lightning.planning.problem import PlanResult, ShootingProblem, frozen

__all__ = [
    "AdamSettings",
    "CEMPlanner",
    "CEMSettings",
    "Controller",
    "DistancePenalty",
    "EnsemblePenalty",
    "Evaluation",
    "Evaluator",
    "HeldOutEpisodes",
    "MPCEpisodes",
    "OpenLoopTasks",
    "GradientPlanner",
    "MPCSettings",
    "NoPenalty",
    "Penalty",
    "PlanResult",
    "Planner",
    "PolicyPlanner",
    "ScorePenalty",
    "ShootingProblem",
    "StackedGradientPlanner",
    "frozen",
    "make_evaluator",
    "make_planner",
    "parse_beta",
    "plan_and_evaluate",
    "stack_planners",
]
