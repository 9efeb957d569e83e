"""Evaluation protocols, registered by name on import: each builds a ``Split`` (train view +
held-out evaluators) from data and a seed (see ``cdrec.scenarios.registry``).

Every module of this package other than ``registry`` and ``common`` defines a scenario and is
imported here, so a new scenario is one new module (decorated with ``@register_scenario``).
"""

import importlib
import pkgutil

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


def import_scenario_modules() -> None:
    """Import (and so register) every scenario module found on this package's path."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in {"registry", "common"}:
            importlib.import_module(f"{__name__}.{module.name}")


import_scenario_modules()

__all__ = ["ColdStartUsers", "KFoldRating", "LeaveOneOut", "Scenario", "build_scenario",
           "import_scenario_modules", "register_scenario", "scenario_class", "scenario_names"]
