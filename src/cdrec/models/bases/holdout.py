"""Early stopping of a base without validation users: its loss on a held-out slice of its own
training interactions (training data only, never evaluation users)."""

from __future__ import annotations

import torch

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import sample_negatives
from cdrec.models.bases.interface import EmbeddingBase
from cdrec.train import FitContext, Validate


def holdout_validator(base: EmbeddingBase, held: Interactions, n_items: int,
                       observed: torch.Tensor, context: FitContext) -> Validate:
    device = context.device
    u, i, r = held.user.to(device), held.item.to(device), held.rating.to(device)
    if base.implicit:
        # Fixed negatives for the held-out pairs: the same yardstick every epoch.
        neg = sample_negatives(held.user.repeat_interleave(base.config.n_neg), n_items, observed,
                               context.generator).view(-1, base.config.n_neg).to(device)

        def validate() -> tuple[float, str, bool]:
            with torch.no_grad():
                return float(base.loss_with(base.user_state(u), i, neg)), "holdout_loss", False
    else:
        def validate() -> tuple[float, str, bool]:
            with torch.no_grad():
                return float((base(u, i) - r).pow(2).mean().sqrt()), "holdout_rmse", False
    return validate
