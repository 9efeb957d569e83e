"""Every method, registered by name on import (see ``cdrec.models.base``).

Bases (single-domain embedding models, ``cdrec.models.bases.BASES``) are imported first, so that
the per-base variants of the transfer methods (``EMCDR_<base>``, ...) exist for each of them.
"""

from cdrec.models import mf  # noqa: F401  (bases first: MF, BPR)
from cdrec.models.base import (
           Recommender,
           available_models,
           build_model,
           register,
           register_variants,
)
from cdrec.models.baselines import GlobalMean, ItemMean, Popularity
from cdrec.models.bases import BASES
from cdrec.models.cmf import CMF
from cdrec.models.emcdr import EMCDR
from cdrec.models.mf import BPR, MF, TGT

register_variants(EMCDR, "EMCDR", sorted(BASES))
register_variants(EMCDR, "EMCDR_ori", sorted(BASES), {"overlap_only": True})

__all__ = ["BPR", "CMF", "EMCDR", "MF", "TGT", "GlobalMean", "ItemMean", "Popularity",
           "Recommender", "available_models", "build_model", "register"]
