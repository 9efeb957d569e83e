"""BiasFloor: the item side of a target-only biased MF, ``mu + b_i``, for every user.

A biased MF (Koren, Bell, Volinsky, 2009, Eq. 4: r_hat = mu + b_u + b_i + p_u . q_i) trained on
one domain alone learns item biases ``b_i`` with the user effects ``b_u`` and ``p_u . q_i``
taken out, so ``mu + b_i`` is a better non-personalised prediction than a (shrunk) item mean,
which mixes who rated an item into its average. A cold-start user has no target data, so
nothing personal is lost: this is the floor a transfer method must beat, and it costs one MF
fit. Early stopping judges the floor's own predictions on the validation users; in the
cold-start scenario the MF sees the target domain only (as TGT), elsewhere each domain.

In cold-start, BiasFloor's predictions are TGT's: TGT's cold users have zero factors and zero
bias, so TGT predicts them ``mu + b_i`` too, trained and early-stopped the same way. It differs
from TGT where users are warm (``kfold_rating``), and names the floor explicitly in a table.
"""

from __future__ import annotations

import torch

from cdrec.models.bases import SingleDomain
from cdrec.models.bases.mf import MFBase, MFConfig
from cdrec.models.registry import register
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext


@register("BiasFloor")
class BiasFloor(SingleDomain):
    """``mu + b_i`` of a biased MF trained on each domain alone (the target in cold-start)."""

    base_name = "MF"
    merge_in_coldstart = False
    supports = frozenset({"coldstart", "kfold_rating"})  # rating protocols: it predicts ratings
    is_floor = True
    serves_new_users_at_prior = True  # mu + b_i: the prior state's prediction
    config: MFConfig

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        if not self.config.use_bias:
            raise ValueError("BiasFloor is the biases of a biased MF: use_bias must be true")
        if train.implicit:
            raise ValueError("BiasFloor predicts ratings; for implicit feedback the floor is "
                             "Popularity")
        super()._fit(train, validation, context)

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """Every user is scored at the prior (zero state): ``mu + b_i``."""
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"BiasFloor was fitted on {list(self.models)}, not {domain!r}")
        base = self.base(domain)
        prior = torch.zeros(users.numel(), base.user_dim, device=users.device)
        return base.score_items(prior, torch.arange(n_items, device=users.device))

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"BiasFloor was fitted on {list(self.models)}, not {domain!r}")
        base = self.models[domain]
        assert isinstance(base, MFBase)
        return base.global_mean + base.item_bias[items]
