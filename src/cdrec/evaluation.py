"""Shared evaluation plumbing: batched scoring of (user, item) pairs by a fitted model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import sample_negatives
from cdrec.metrics import auc, mae, ndcg_at_k, per_user_errors, rmse

if TYPE_CHECKING:
    from cdrec.models.base import Recommender

SCORE_BATCH = 1 << 18  # pairs per predict call: large enough to amortise overhead, small in memory


@torch.no_grad()
def score_pairs(model: Recommender, domain: str, users: torch.Tensor, items: torch.Tensor,
                batch_size: int = SCORE_BATCH) -> torch.Tensor:
    """``model.predict`` over aligned 1-D ``users``/``items`` in large batches, returned on CPU.

    Any shape is accepted: the pairs are flattened and the scores reshaped back.
    """
    model.check_fitted()
    shape = users.shape
    users, items = users.reshape(-1), items.reshape(-1)
    device = model.device
    out = torch.empty(users.shape[0], dtype=torch.float32)
    for start in range(0, users.shape[0], batch_size):
        stop = start + batch_size
        scores = model.predict(domain, users[start:stop].to(device), items[start:stop].to(device))
        out[start:stop] = scores.float().cpu()
    return out.reshape(shape)


class RatingEvaluator:
    """MAE and RMSE over held-out ratings of one domain (pooled over ratings, as the papers report);
    ``per_user`` gives each user's own MAE and RMSE for paired tests."""

    main_metric = "RMSE"
    higher_is_better = False

    def __init__(self, domain: str, interactions: Interactions) -> None:
        if len(interactions) == 0:
            raise ValueError(f"no held-out ratings to evaluate in domain {domain!r}")
        self.domain = domain
        self.interactions = interactions

    def _predict(self, model: Recommender) -> torch.Tensor:
        return score_pairs(model, self.domain, self.interactions.user, self.interactions.item)

    def evaluate(self, model: Recommender) -> dict[str, float]:
        pred = self._predict(model)
        return {"MAE": mae(pred, self.interactions.rating),
                "RMSE": rmse(pred, self.interactions.rating)}

    def per_user(self, model: Recommender) -> pd.DataFrame:
        errors = per_user_errors(self._predict(model), self.interactions.rating,
                                 self.interactions.user)
        return pd.DataFrame({"user": errors["user"].numpy(), "MAE": errors["mae"].numpy(),
                             "RMSE": errors["rmse"].numpy(), "n": errors["n"].numpy()})

    @property
    def users(self) -> torch.Tensor:
        return torch.unique(self.interactions.user)


class RankingEvaluator:
    """Per-user ranking of fixed candidate lists: AUC and NDCG@k, averaged over users.

    ``candidates``/``labels``/``mask`` are [n_users, n_candidates]; padding has ``mask`` False.
    Candidates should be in random order within a row (ties are broken by position in NDCG).
    """

    main_metric = "AUC"
    higher_is_better = True

    def __init__(self, domain: str, users: torch.Tensor, candidates: torch.Tensor,
                 labels: torch.Tensor, mask: torch.Tensor, k: int = 10) -> None:
        self.domain, self.users, self.k = domain, users, k
        self.candidates, self.labels, self.mask = candidates, labels, mask

    def _per_user(self, model: Recommender) -> dict[str, torch.Tensor]:
        user_grid = self.users.unsqueeze(1).expand_as(self.candidates)
        scores = score_pairs(model, self.domain, user_grid, self.candidates)
        return {"AUC": auc(scores, self.labels.bool(), self.mask),
                f"NDCG@{self.k}": ndcg_at_k(scores, self.labels.float(), self.k, self.mask)}

    def evaluate(self, model: Recommender) -> dict[str, float]:
        return {name: float(torch.nanmean(v)) for name, v in self._per_user(model).items()}

    def per_user(self, model: Recommender) -> pd.DataFrame:
        values = self._per_user(model)
        return pd.DataFrame({"user": self.users.numpy(),
                             **{name: v.numpy() for name, v in values.items()}})


def candidate_lists(users: torch.Tensor, positives: Interactions, n_items: int, n_neg: int,
                    observed: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each user: their held-out positives plus ``n_neg`` unobserved items per positive,
    shuffled within the row and right-padded. Returns ``(candidates, labels, mask)``.

    Vectorised: rows are grouped by user with one sort, no Python loop over users.
    """
    pos_user = torch.searchsorted(users, positives.user)
    n_pos = torch.bincount(pos_user, minlength=users.numel())
    neg_user = pos_user.repeat_interleave(n_neg)
    neg_items = sample_negatives(users[neg_user], n_items, observed, generator)
    row = torch.cat([pos_user, neg_user])
    item = torch.cat([positives.item, neg_items])
    label = torch.cat([torch.ones_like(pos_user), torch.zeros_like(neg_user)])
    # Random order within each row: sort by (row, random key).
    key = torch.rand(row.numel(), generator=generator)
    order = torch.argsort(row.double() + key.double() * 0.5, stable=True)
    row, item, label = row[order], item[order], label[order]
    per_row = n_pos * (1 + n_neg)
    offsets = torch.cumsum(per_row, 0) - per_row
    col = torch.arange(row.numel()) - offsets[row]
    width = int(per_row.max()) if per_row.numel() else 0
    candidates = torch.zeros(users.numel(), width, dtype=torch.long)
    labels = torch.zeros(users.numel(), width, dtype=torch.long)
    mask = torch.zeros(users.numel(), width, dtype=torch.bool)
    candidates[row, col] = item
    labels[row, col] = label
    mask[row, col] = True
    return candidates, labels, mask
