"""Every method, registered by name on import (see ``cdrec.models.base``).

Bases (single-domain embedding models, ``cdrec.models.bases.BASES``) are imported first, so that
the per-base variants of the transfer methods (``EMCDR_<base>``, ...) exist for each of them.
"""

from cdrec.models import (  # noqa: F401  (bases first: MF, BPR, CML, DNN, GMF, ListRankMF)
           cml,
           dnn,
           gmf,
           listrank,
           mf,
)
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
from cdrec.models.cml import CML
from cdrec.models.cst import CST
from cdrec.models.dcdcsr import DCDCSR
from cdrec.models.dnn import DNN
from cdrec.models.emcdr import EMCDR
from cdrec.models.gmf import GMF
from cdrec.models.listrank import ListRankMF
from cdrec.models.mf import BPR, MF, TGT
from cdrec.models.ptupcdr import PTUPCDR
from cdrec.models.sscdr import SSCDR
from cdrec.models.tmcdr import TMCDR

register_variants(EMCDR, "EMCDR", sorted(BASES))
register_variants(EMCDR, "EMCDR_ori", sorted(BASES), {"overlap_only": True})
register_variants(TMCDR, "TMCDR", sorted(BASES))
register_variants(PTUPCDR, "PTUPCDR", sorted(BASES))

__all__ = [
           "BPR",
           "CMF",
           "CML",
           "CST",
           "DCDCSR",
           "DNN",
           "EMCDR",
           "GMF",
           "MF",
           "PTUPCDR",
           "SSCDR",
           "TGT",
           "TMCDR",
           "GlobalMean",
           "ItemMean",
           "ListRankMF",
           "Popularity",
           "Recommender",
           "available_models",
           "build_model",
           "register",
]
