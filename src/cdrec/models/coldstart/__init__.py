"""Cold-start transfer methods: pretrained per-domain bases (``cdrec.models.bases``) plus a stage
that gives a user without target history a target state from their source one.

``transfer`` holds the family base (``TransferMethod``); then one module per method. Importing
this package registers every method and its per-base variants (``EMCDR_<base>``, ...), one per
registered base.
"""

from cdrec.models.bases import BASES
from cdrec.models.coldstart.cst import CST
from cdrec.models.coldstart.dcdcsr import DCDCSR
from cdrec.models.coldstart.emcdr import EMCDR
from cdrec.models.coldstart.federated import FedMetaEM, FedMF
from cdrec.models.coldstart.metaem import MetaEM
from cdrec.models.coldstart.ptupcdr import PTUPCDR
from cdrec.models.coldstart.sscdr import SSCDR
from cdrec.models.coldstart.tmcdr import TMCDR
from cdrec.models.coldstart.transfer import TransferConfig, TransferMethod
from cdrec.models.registry import register_preset, register_variants

GENERAL_BASES = sorted(name for name, cls in BASES.items() if cls.transferable)
register_variants(EMCDR, "EMCDR", GENERAL_BASES)
register_variants(EMCDR, "EMCDR_ori", GENERAL_BASES, {"overlap_only": True})
register_variants(TMCDR, "TMCDR", GENERAL_BASES)
register_variants(PTUPCDR, "PTUPCDR", GENERAL_BASES)
# MetaEM over the MF, GMF and DNN prediction modules (its Fig. 3): the meta-embedding base with
# an inner product, GMF's weighted product, or the two towers (the paper's model).
for _suffix, _scorer in (("MF", "mf"), ("GMF", "gmf"), ("DNN", "towers")):
    register_preset(MetaEM, f"MetaEM_{_suffix}", {"base_config": {"scorer": _scorer}},
                    f"MetaEM with the {_suffix} prediction module (scorer {_scorer!r}).")

__all__ = [
    "CST",
    "DCDCSR",
    "EMCDR",
    "GENERAL_BASES",
    "PTUPCDR",
    "SSCDR",
    "TMCDR",
    "FedMF",
    "FedMetaEM",
    "MetaEM",
    "TransferConfig",
    "TransferMethod",
]
