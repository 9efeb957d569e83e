"""Shared neural building blocks: MLPs and losses, written once and reused."""

from cdrec.nn.layers import MLP
from cdrec.nn.losses import bpr_loss, bpr_loss_terms, l2_penalty

__all__ = ["MLP", "bpr_loss", "bpr_loss_terms", "l2_penalty"]
