"""Evaluation protocols: each builds a ``Split`` (train view + held-out evaluators) from data."""

from cdrec.scenarios.base import Split, TrainView
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.scenarios.dualtarget import KFoldRating
from cdrec.scenarios.multitarget import LeaveOneOut

SCENARIOS: dict[str, type] = {"coldstart": ColdStartUsers, "leave_one_out": LeaveOneOut,
                               "kfold_rating": KFoldRating}

__all__ = ["SCENARIOS", "ColdStartUsers", "KFoldRating", "LeaveOneOut", "Split", "TrainView"]
