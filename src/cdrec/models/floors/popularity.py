"""Popularity: items ranked by their number of training interactions (implicit floor)."""

from __future__ import annotations

import torch

from cdrec.models.floors.table import PerDomainTable
from cdrec.models.registry import register


@register("Popularity")
class Popularity(PerDomainTable):
    """Score = number of training interactions of the item (implicit protocols' floor)."""

    def _table(self, items: torch.Tensor, ratings: torch.Tensor, n_items: int) -> torch.Tensor:
        return torch.bincount(items, minlength=n_items).float()
