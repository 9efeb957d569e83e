"""Shared neural building blocks: MLPs, losses, LoRA adapters and the per-user-temperature
contrastive loss, written once and reused."""

from cdrec.nn.contrastive import IndividualTemperatures, contrastive_eq3
from cdrec.nn.layers import MLP
from cdrec.nn.lora import LoRAEmbedding, LoRALinear, adapt_linears
from cdrec.nn.losses import bpr_loss, bpr_loss_terms, l2_penalty

__all__ = ["MLP", "IndividualTemperatures", "LoRAEmbedding", "LoRALinear", "adapt_linears",
           "bpr_loss", "bpr_loss_terms", "contrastive_eq3", "l2_penalty"]
