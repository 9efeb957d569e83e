"""GlobalMean: the domain's mean training rating for every pair."""

from __future__ import annotations

import torch

from cdrec.models.floors.table import PerDomainTable
from cdrec.models.registry import register


@register("GlobalMean")
class GlobalMean(PerDomainTable):
    """Every prediction is the domain's training mean rating."""

    def _table(self, items: torch.Tensor, ratings: torch.Tensor, n_items: int) -> torch.Tensor:
        return torch.full((n_items,), float(ratings.mean()))
