"""Shared neural building blocks: factor tables, MLPs and losses, written once and reused."""

from cdrec.nn.layers import MLP, BiasedMF
from cdrec.nn.losses import bpr_loss, l2_penalty

__all__ = ["MLP", "BiasedMF", "bpr_loss", "l2_penalty"]
