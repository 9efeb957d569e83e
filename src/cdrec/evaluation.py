"""Shared evaluation plumbing: batched scoring of (user, item) pairs by a fitted model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import pandas as pd
import torch

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import sample_negatives
from cdrec.metrics import auc, mae, ndcg_at_k, per_user_errors, rmse, sampled_rank_metrics
from cdrec.split import Evaluator, Predictor

SCORE_BATCH = 1 << 18  # pairs per predict call: large enough to amortise overhead, small in memory


@torch.no_grad()
def score_pairs(model: Predictor, domain: str, users: torch.Tensor, items: torch.Tensor,
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


class OneDomain:
    """Evaluators of a single domain: ``for_domain`` gives the evaluator itself for its own
    domain and ``None`` for any other (see ``cdrec.split.Evaluator``)."""

    domain: str

    def for_domain(self, domain: str) -> Self | None:
        return self if domain == self.domain else None


class RatingEvaluator(OneDomain):
    """MAE and RMSE over held-out ratings of one domain (pooled over ratings, as the papers report);
    ``per_user`` gives each user's own MAE and RMSE for paired tests."""

    main_metric = "RMSE"
    higher_is_better = False

    def __init__(self, domain: str, interactions: Interactions) -> None:
        if len(interactions) == 0:
            raise ValueError(f"no held-out ratings to evaluate in domain {domain!r}")
        self.domain = domain
        self.interactions = interactions

    def _predict(self, model: Predictor) -> torch.Tensor:
        return score_pairs(model, self.domain, self.interactions.user, self.interactions.item)

    def evaluate(self, model: Predictor) -> dict[str, float]:
        pred = self._predict(model)
        return {"MAE": mae(pred, self.interactions.rating),
                "RMSE": rmse(pred, self.interactions.rating)}

    def per_user(self, model: Predictor) -> pd.DataFrame:
        errors = per_user_errors(self._predict(model), self.interactions.rating,
                                 self.interactions.user)
        return pd.DataFrame({"user": errors["user"].numpy(), "MAE": errors["mae"].numpy(),
                             "RMSE": errors["rmse"].numpy(), "n": errors["n"].numpy()})

    @property
    def users(self) -> torch.Tensor:
        return torch.unique(self.interactions.user)


class RankingEvaluator(OneDomain):
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

    def _per_user(self, model: Predictor) -> dict[str, torch.Tensor]:
        user_grid = self.users.unsqueeze(1).expand_as(self.candidates)
        scores = score_pairs(model, self.domain, user_grid, self.candidates)
        return {"AUC": auc(scores, self.labels.bool(), self.mask),
                f"NDCG@{self.k}": ndcg_at_k(scores, self.labels.float(), self.k, self.mask)}

    def evaluate(self, model: Predictor) -> dict[str, float]:
        return {name: float(torch.nanmean(v)) for name, v in self._per_user(model).items()}

    def per_user(self, model: Predictor) -> pd.DataFrame:
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


# --------------------------------------------------------------------------------------------
# Leave-one-out sampled ranking, rating + top-k per user, and several domains at once
# --------------------------------------------------------------------------------------------


def _main_first(metrics: dict[str, torch.Tensor], main: str) -> dict[str, torch.Tensor]:
    """The same dict with ``main`` first: report code takes the first metric column as main."""
    return {main: metrics[main], **{k: v for k, v in metrics.items() if k != main}}


class SampledRankingEvaluator(OneDomain):
    """One held-out positive against ``n_neg`` fixed sampled negatives per user, in one domain.

    ``users`` [n], ``positives`` [n] and ``negatives`` [n, n_neg] are fixed when the split is made.
    Per user, the positive is ranked among its negatives by the model's scores and
    :func:`cdrec.metrics.sampled_rank_metrics` gives MRR, HR@k and NDCG@k for each ``k`` in
    ``ks`` (ties resolved as their expectation under random tie-breaking, so a constant model
    scores exactly chance). ``evaluate`` averages over users; ``main_metric`` is
    ``NDCG@{ks[0]}``.

    ``groups`` names subsets of the users, each a boolean ``[n]`` mask fixed with the split
    (e.g. ``{"low": ...}``: the users with few training interactions, UCLR's Table 3). Every
    metric is then also reported over each group's users alone as ``"{group}/{metric}"``: in
    ``evaluate`` the mean over the group (NaN when it is empty), in ``per_user`` a column that
    holds the user's value inside the group and NaN outside it. The NaN keeps one row per user,
    so paired tests on ``{group}/{metric}`` (which drop NaN pairs) compare the group's users
    only, with no second table to join. The main metric is never a group's.
    """

    higher_is_better = True

    def __init__(self, domain: str, users: torch.Tensor, positives: torch.Tensor,
                 negatives: torch.Tensor, ks: tuple[int, ...] = (10, 20),
                 groups: Mapping[str, torch.Tensor] | None = None) -> None:
        if users.dim() != 1 or positives.shape != users.shape or negatives.dim() != 2 \
                or negatives.shape[0] != users.shape[0]:
            raise ValueError(f"users and positives must be [n] and negatives [n, n_neg], got "
                             f"{tuple(users.shape)}, {tuple(positives.shape)} and "
                             f"{tuple(negatives.shape)}")
        if users.numel() == 0:
            raise ValueError(f"no held-out users to evaluate in domain {domain!r}")
        if not ks:
            raise ValueError("ks must name at least one cut-off")
        self.domain, self.users = domain, users
        self.positives, self.negatives, self.ks = positives, negatives, tuple(ks)
        self.main_metric = f"NDCG@{self.ks[0]}"
        self.groups = _check_groups(groups or {}, users.shape)

    @property
    def n_neg(self) -> int:
        return int(self.negatives.shape[1])

    def _per_user(self, model: Predictor) -> dict[str, torch.Tensor]:
        items = torch.cat([self.positives.unsqueeze(1), self.negatives], 1)
        scores = score_pairs(model, self.domain, self.users.unsqueeze(1).expand_as(items), items)
        values = _main_first(sampled_rank_metrics(scores[:, 0], scores[:, 1:], self.ks),
                             self.main_metric)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        for group, mask in self.groups.items():
            values.update({f"{group}/{name}": torch.where(mask, v, nan)
                           for name, v in list(values.items()) if "/" not in name})
        return values

    def evaluate(self, model: Predictor) -> dict[str, float]:
        # Over the users a column is defined for: all, or a group's (NaN if it has none).
        return {name: float(v[~v.isnan()].mean()) for name, v in self._per_user(model).items()}

    def per_user(self, model: Predictor) -> pd.DataFrame:
        values = self._per_user(model)
        return pd.DataFrame({"user": self.users.numpy(),
                             **{name: v.numpy() for name, v in values.items()}})


def _check_groups(groups: Mapping[str, torch.Tensor], shape: torch.Size
                  ) -> dict[str, torch.Tensor]:
    """``groups`` as a dict, each a boolean mask of ``shape`` named without a ``/``."""
    for group, mask in groups.items():
        if not group or "/" in group:
            raise ValueError(f"a group name must be non-empty and hold no '/', got {group!r}")
        if mask.dtype != torch.bool or mask.shape != shape:
            raise ValueError(f"group {group!r} must be a boolean mask of shape {tuple(shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
    return dict(groups)


class RatingTopKEvaluator(RatingEvaluator):
    """Held-out ratings of one domain: MAE and RMSE, plus Precision@k and Recall@k per user.

    MAE and RMSE are pooled over all held-out ratings (as :class:`RatingEvaluator`). For the
    top-k metrics each user's *own held-out items* are ranked by predicted rating (ties broken by
    a random order fixed at construction from ``generator``, seed 0 if None); an item is relevant
    when its true rating is ``>= relevance_threshold``. With ``hits`` = relevant items among the
    user's top ``k``::

        Precision@k = hits / k               (k even when the user has fewer held-out items)
        Recall@k    = hits / #relevant       (users without a relevant item are left out)

    Both are averaged over users. No dense user x item array is built: one sort of the held-out
    rows by (user, predicted rating) gives every rank.
    """

    main_metric = "RMSE"
    higher_is_better = False

    def __init__(self, domain: str, interactions: Interactions, k: int = 5,
                 relevance_threshold: float = 4.0, generator: torch.Generator | None = None
                 ) -> None:
        super().__init__(domain, interactions)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k, self.relevance_threshold = k, float(relevance_threshold)
        # A fixed random order of the rows: the tie-break among equal predictions.
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._tie_order = torch.randperm(len(interactions), generator=generator)

    def _per_user(self, model: Predictor, pred: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
        inter = self.interactions
        pred = self._predict(model) if pred is None else pred
        errors = per_user_errors(pred, inter.rating, inter.user)
        # Sort rows by user, then predicted rating descending, then the fixed random order.
        order = self._tie_order
        order = order[torch.argsort(pred[order], descending=True, stable=True)]
        order = order[torch.argsort(inter.user[order], stable=True)]
        users, counts = torch.unique_consecutive(inter.user[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.numel()) - starts.repeat_interleave(counts)
        group = torch.arange(users.numel()).repeat_interleave(counts)
        relevant = (inter.rating[order] >= self.relevance_threshold).double()
        hits = torch.zeros(users.numel(), dtype=torch.float64).index_add_(
            0, group, relevant * (rank < self.k).double())
        n_rel = torch.zeros(users.numel(), dtype=torch.float64).index_add_(0, group, relevant)
        recall = torch.where(n_rel > 0, hits / n_rel.clamp_min(1),
                             torch.full_like(hits, float("nan")))
        return {"user": errors["user"], "RMSE": errors["rmse"], "MAE": errors["mae"],
                f"Precision@{self.k}": hits / self.k, f"Recall@{self.k}": recall,
                "n": errors["n"]}

    def evaluate(self, model: Predictor) -> dict[str, float]:
        pred = self._predict(model)
        out = {"RMSE": rmse(pred, self.interactions.rating),
               "MAE": mae(pred, self.interactions.rating)}
        values = self._per_user(model, pred)
        for name in (f"Precision@{self.k}", f"Recall@{self.k}"):
            out[name] = float(torch.nanmean(values[name]))
        return out

    def per_user(self, model: Predictor) -> pd.DataFrame:
        return pd.DataFrame({name: v.numpy() for name, v in self._per_user(model).items()})


class MultiDomainEvaluator:
    """Several per-domain evaluators as one (multi-target and dual-target protocols).

    ``evaluate`` returns every domain's metrics as ``"{domain}/{metric}"`` and, unprefixed, each
    metric's unweighted mean over the domains (a domain counts once whatever its size).
    ``main_metric`` is the parts' main metric, unprefixed: the mean over domains is what early
    stopping and model selection see. ``per_user`` stacks the parts' tables with a ``domain``
    column: one row per (domain, user). ``domain`` is ``None`` (no single domain is judged): a
    model that validates one domain at a time asks :meth:`for_domain` for that domain's part.
    """

    domain = None

    def __init__(self, parts: dict[str, Evaluator]) -> None:
        if not parts:
            raise ValueError("MultiDomainEvaluator needs at least one per-domain evaluator")
        mains = {p.main_metric for p in parts.values()}
        directions = {p.higher_is_better for p in parts.values()}
        if len(mains) != 1 or len(directions) != 1:
            raise ValueError(f"per-domain evaluators must share main_metric and direction, got "
                             f"{sorted(mains)} and {sorted(directions)}")
        self.parts = dict(parts)
        self.main_metric = mains.pop()
        self.higher_is_better = directions.pop()

    @property
    def domains(self) -> list[str]:
        return list(self.parts)

    def for_domain(self, domain: str) -> Evaluator | None:
        """The evaluator of one domain, or ``None`` if that domain is not evaluated."""
        return self.parts.get(domain)

    def evaluate(self, model: Predictor) -> dict[str, float]:
        per_domain = {name: part.evaluate(model) for name, part in self.parts.items()}
        first = next(iter(per_domain.values()))
        common = [m for m in first if all(m in v for v in per_domain.values())]
        out = {m: sum(v[m] for v in per_domain.values()) / len(per_domain) for m in common}
        for name, values in per_domain.items():
            out.update({f"{name}/{m}": v for m, v in values.items()})
        return out

    def per_user(self, model: Predictor) -> pd.DataFrame:
        frames = []
        for name, part in self.parts.items():
            frame = part.per_user(model)
            frame.insert(0, "domain", name)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)
