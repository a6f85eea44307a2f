"""Planning: problem → penalty → optimizer → MPC, and evaluation on the true env."""

from sgp_lightning.planning.evaluate import (
    Evaluation,
    build_problem,
    plan_and_evaluate,
    rollout_part,
    validate_planner_config,
)
from sgp_lightning.planning.mpc import MPC
from sgp_lightning.planning.optimizers import CEMPlanner, GradientPlanner, build_planner
from sgp_lightning.planning.penalties import (
    DistancePenalty,
    EnsemblePenalty,
    NoPenalty,
    Penalty,
    ScorePenalty,
    build_penalty,
    parse_beta,
)
from sgp_lightning.planning.problem import PlanResult, ShootingProblem, frozen

__all__ = [
    "MPC",
    "CEMPlanner",
    "DistancePenalty",
    "EnsemblePenalty",
    "Evaluation",
    "GradientPlanner",
    "NoPenalty",
    "Penalty",
    "PlanResult",
    "ScorePenalty",
    "ShootingProblem",
    "build_penalty",
    "build_planner",
    "build_problem",
    "frozen",
    "parse_beta",
    "plan_and_evaluate",
    "rollout_part",
    "validate_planner_config",
]
