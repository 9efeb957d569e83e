"""Every method, registered by name on import (see ``cdrec.models.base``)."""

from cdrec.models.base import Recommender, available_models, build_model, register
from cdrec.models.baselines import GlobalMean, ItemMean, Popularity
from cdrec.models.cmf import CMF
from cdrec.models.emcdr import EMCDR
from cdrec.models.mf import MF, TGT

__all__ = ["CMF", "EMCDR", "MF", "TGT", "GlobalMean", "ItemMean", "Popularity", "Recommender",
           "available_models", "build_model", "register"]
