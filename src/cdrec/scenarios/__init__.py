"""Evaluation protocols, registered by name on import: each builds a ``Split`` (train view +
held-out evaluators) from data and a seed (see ``cdrec.scenarios.registry``)."""

from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.scenarios.kfold_rating import KFoldRating
from cdrec.scenarios.leave_one_out import LeaveOneOut
from cdrec.scenarios.registry import (
    Scenario,
    build_scenario,
    register_scenario,
    scenario_class,
    scenario_names,
)

__all__ = ["ColdStartUsers", "KFoldRating", "LeaveOneOut", "Scenario", "build_scenario",
           "register_scenario", "scenario_class", "scenario_names"]
