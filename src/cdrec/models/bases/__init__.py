"""Embedding bases: the single-domain models that transfer methods pretrain, map and meta-learn,
and the single-domain recommenders over them (MF, TGT, BPR, CML, ListRankMF, GMF, DNN,
NeuMF, LightGCN).

By concern: ``interface`` (what a base is), ``registry`` (bases by name), ``batching`` (epoch
data), ``holdout`` (early stopping without validation users), ``pretrain`` (fitting a base on a
domain), ``cache`` (bases shared by the fits of one split), ``single_domain`` (no transfer);
then one module per base. Importing this package registers every base and its recommender.
"""

from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.cache import BaseCache
from cdrec.models.bases.cml import CML, CMLBase
from cdrec.models.bases.dnn import DNN
from cdrec.models.bases.gmf import GMF
from cdrec.models.bases.interface import BaseConfig, EmbeddingBase, FactorBase
from cdrec.models.bases.lightgcn import LightGCN, LightGCNBase, LightGCNConfig
from cdrec.models.bases.listrank import ListRankMF
from cdrec.models.bases.mf import BPR, MF, TGT, MFConfig
from cdrec.models.bases.neumf import NeuMF, NeuMFBase, NeuMFConfig  # noqa: F401
from cdrec.models.bases.pretrain import fit_base, new_base, pretrain_base, users_without_data
from cdrec.models.bases.registry import BASES, base_class, register_base
from cdrec.models.bases.single_domain import SingleDomain, merged_target_view

__all__ = ["BASES", "BPR", "CML", "DNN", "GMF", "MF", "TGT", "BaseCache", "BaseConfig",
           "CMLBase", "EmbeddingBase", "FactorBase", "LightGCN", "LightGCNBase", "LightGCNConfig",
           "ListRankMF", "MFConfig", "SingleDomain",
           "base_class", "epoch_batches", "fit_base", "merged_target_view", "new_base",
           "pretrain_base", "register_base", "users_without_data"]
