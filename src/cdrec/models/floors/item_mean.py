"""ItemMean: the Bayesian-shrunk item average, the floor of every rating table."""

from __future__ import annotations

import torch
from pydantic import Field

from cdrec.models.floors.table import PerDomainTable
from cdrec.models.recommender import ModelConfig, choose_on_validation
from cdrec.models.registry import register
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext


class ItemMeanConfig(ModelConfig):
    shrinkage: float = Field(2.0, ge=0, description=(
        "prior weight, in pseudo-ratings at the global mean, of each item's average"))
    shrinkage_grid: list[float] | None = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0], description=(
            "when validation users are given, the shrinkage is chosen from this grid on them "
            "(as every other model's epochs are); null keeps `shrinkage` fixed"))


@register("ItemMean")
class ItemMean(PerDomainTable):
    """Item average shrunk towards the global mean:
    r_hat(i) = (sum_{u in R(i)} r_ui + k * mu) / (|R(i)| + k), with k = ``shrinkage``
    (the Bayesian average; an item never rated gets mu)."""

    Config = ItemMeanConfig
    config: ItemMeanConfig

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        self.shrinkage_ = self.config.shrinkage
        grid = self.config.shrinkage_grid
        if validation is None or not grid:
            super()._fit(train, validation, context)
            return

        def apply(k: float) -> None:
            self.shrinkage_ = k
            super(ItemMean, self)._fit(train, validation, context)

        # A floor gets the same model selection as the models it is compared to.
        self.selected_ = choose_on_validation(self, "shrinkage", grid, apply, validation)

    def _table(self, items: torch.Tensor, ratings: torch.Tensor, n_items: int) -> torch.Tensor:
        mu = ratings.mean()
        sums = torch.zeros(n_items).index_add_(0, items, ratings)
        counts = torch.bincount(items, minlength=n_items).float()
        k = self.shrinkage_
        return torch.where(counts > 0, (sums + k * mu) / (counts + k).clamp_min(1e-12), mu)
