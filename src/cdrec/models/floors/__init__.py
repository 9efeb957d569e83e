"""The floors (non-personalised models): what a model that knows nothing about the user achieves.

Every cold-start table lists one of these, so a transfer method's gain is measured against the
item-side signal it could have had for free (issue: honest cold-start evaluation).
"""

from cdrec.models.floors.bias_floor import BiasFloor
from cdrec.models.floors.global_mean import GlobalMean
from cdrec.models.floors.item_mean import ItemMean, ItemMeanConfig
from cdrec.models.floors.popularity import Popularity
from cdrec.models.floors.table import PerDomainTable

__all__ = ["BiasFloor", "GlobalMean", "ItemMean", "ItemMeanConfig", "PerDomainTable", "Popularity"]
