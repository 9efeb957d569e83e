"""Evaluation protocols: each builds a ``Split`` (train view + held-out evaluators) from data."""

from cdrec.scenarios.base import Split, TrainView
from cdrec.scenarios.coldstart import ColdStartUsers

SCENARIOS: dict[str, type] = {"coldstart": ColdStartUsers}

__all__ = ["SCENARIOS", "ColdStartUsers", "Split", "TrainView"]
