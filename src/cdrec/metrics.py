"""Batched evaluation metrics on tensors.

Conventions
-----------
* Rating metrics (:func:`mae`, :func:`rmse`, :func:`per_user_errors`) take aligned predictions and
  targets of any (equal) shape.
* Ranking metrics take 2-D tensors ``[n_users, n_candidates]``: one row of candidate scores per
  user, with labels/gains aligned to it. An optional boolean ``mask`` of the same shape marks the
  real candidates (``True``) and padding (``False``), so users with different numbers of
  candidates share one batch; padded entries never influence a result.
* Per-user functions return a 1-D ``float64`` tensor ``[n_users]`` holding ``NaN`` where the metric
  is undefined for that user (e.g. AUC without positives); average with ``torch.nanmean``.
* Scores must not be NaN among real candidates (a ``ValueError`` is raised): a NaN has no rank.

Every function is vectorised (sorts, ``searchsorted``, ``gather``, ``index_add``); none loops over
users in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "auc",
    "grouped_mean",
    "mae",
    "ndcg_at_k",
    "per_user_errors",
    "precision_recall_at_k",
    "rmse",
    "sampled_rank_metrics",
]

_NAN = float("nan")


# --------------------------------------------------------------------------- validation helpers


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.numel() == 0:
        raise ValueError("pred and target are empty: an error over no ratings is undefined")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


def _float_scores(scores: Tensor) -> Tensor:
    """Scores as a floating tensor (integer scores are promoted to float64, ties kept exact)."""
    return scores if scores.is_floating_point() else scores.to(torch.float64)


def _prepare(scores: Tensor, other: Tensor, other_name: str, mask: Tensor | None
             ) -> tuple[Tensor, Tensor]:
    """Validate a ``[n_users, n_candidates]`` batch; return float scores and a boolean mask."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [n_users, n_candidates], got shape "
                         f"{tuple(scores.shape)}")
    if other.shape != scores.shape:
        raise ValueError(f"{other_name} must have the shape of scores {tuple(scores.shape)}, "
                         f"got {tuple(other.shape)}")
    if mask is None:
        mask = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    else:
        if mask.shape != scores.shape:
            raise ValueError(f"mask must have the shape of scores {tuple(scores.shape)}, "
                             f"got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = real candidate), "
                             f"got dtype {mask.dtype}")
    scores = _float_scores(scores)
    bad = torch.isnan(scores) & mask
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"scores contain NaN for a real candidate (first at row {row}, "
                         f"column {col})")
    return scores, mask


def _ranking(scores: Tensor, mask: Tensor, k: int) -> Tensor:
    """Column indices ``[n_users, min(k, n_candidates)]`` of each row's top-k candidates.

    Real candidates come first, by score descending; ties keep candidate (column) order because
    both sorts are stable. Padding goes last, so it fills top-k slots only when a user has fewer
    than ``k`` real candidates.
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    if not bool(mask.all()):
        real_first = torch.sort(mask.gather(1, order).to(torch.int8), dim=1, descending=True,
                                stable=True).indices
        order = order.gather(1, real_first)
    return order[:, : min(k, scores.shape[1])]


def _discounts(n: int, device: torch.device) -> Tensor:
    """``1 / log2(rank + 1)`` for ranks ``1..n``."""
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    return 1.0 / torch.log2(ranks + 1.0)


# --------------------------------------------------------------------------- rating errors


def mae(pred: Tensor, target: Tensor) -> float:
    """Mean absolute error over all ratings: ``mean(|pred - target|)``."""
    _check_pair(pred, target)
    return float((pred.double() - target.double()).abs().mean())


def rmse(pred: Tensor, target: Tensor) -> float:
    """Root mean squared error over all ratings: ``sqrt(mean((pred - target)^2))``."""
    _check_pair(pred, target)
    return math.sqrt(float((pred.double() - target.double()).square().mean()))


def _grouped_sums(values: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted unique ``groups``, the float64 sum of ``values`` per group and the group sizes."""
    if values.dim() != 1 or groups.dim() != 1 or values.shape != groups.shape:
        raise ValueError(f"values and groups must be 1-D of the same length, got shapes "
                         f"{tuple(values.shape)} and {tuple(groups.shape)}")
    ids, inverse = torch.unique(groups, sorted=True, return_inverse=True)
    sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse, values.to(torch.float64))
    counts = torch.bincount(inverse, minlength=ids.shape[0])
    return ids, sums, counts


def grouped_mean(values: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` per group.

    Returns ``(ids, means)``: the sorted unique group ids and, aligned with them,
    ``means[g] = sum(values[groups == ids[g]]) / count(groups == ids[g])`` (float64).
    """
    ids, sums, counts = _grouped_sums(values, groups)
    return ids, sums / counts


def per_user_errors(pred: Tensor, target: Tensor, users: Tensor) -> dict[str, Tensor]:
    """Per-user rating errors.

    For each user ``u`` with ratings ``R_u``: ``mae_u = mean_{R_u} |pred - target|`` and
    ``rmse_u = sqrt(mean_{R_u} (pred - target)^2)``. Returns
    ``{"user": sorted unique ids, "mae": ..., "rmse": ..., "n": ratings per user}``, all aligned.
    """
    _check_pair(pred, target)
    if users.shape != pred.shape:
        raise ValueError(f"users must have the shape of pred {tuple(pred.shape)}, "
                         f"got {tuple(users.shape)}")
    err = (pred.double() - target.double()).reshape(-1)
    users = users.reshape(-1)
    ids, abs_sums, counts = _grouped_sums(err.abs(), users)
    _, sq_sums, _ = _grouped_sums(err.square(), users)
    return {"user": ids, "mae": abs_sums / counts, "rmse": torch.sqrt(sq_sums / counts),
            "n": counts}


# --------------------------------------------------------------------------- full-list ranking


def auc(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-user ROC AUC (Mann-Whitney U), ties counted as one half.

    For a user with positives ``P`` and negatives ``N`` (real candidates only)::

        AUC = (1 / (|P| |N|)) * sum_{p in P} sum_{n in N} ( 1[s_p > s_n] + 0.5 * 1[s_p = s_n] )

    which equals the rank-sum form with tied scores given their average rank, and therefore
    ``sklearn.metrics.roc_auc_score`` on that user's candidates, ties included.

    ``labels`` is bool or numeric 0/1 (nonzero = positive). Returns ``[n_users]`` float64, NaN for
    users with no positive or no negative candidate.
    """
    scores, mask = _prepare(scores, labels, "labels", mask)
    real_labels = labels[mask]
    if labels.dtype != torch.bool and bool(((real_labels != 0) & (real_labels != 1)).any()):
        raise ValueError("labels must be binary (bool or 0/1) for AUC")
    positive = (labels != 0) & mask
    negative = (labels == 0) & mask
    n_pos = positive.sum(1)
    n_neg = negative.sum(1)
    # Each row's negative scores in ascending order, other slots pushed to the end as +inf.
    inf = torch.tensor(float("inf"), dtype=scores.dtype, device=scores.device)
    neg_sorted = torch.where(negative, scores, inf).sort(dim=1).values.contiguous()
    query = scores.contiguous()
    # Clamping to n_neg discards the +inf fillers (they only count when a score is +inf itself).
    below = torch.searchsorted(neg_sorted, query, side="left").clamp_max(n_neg[:, None])
    at_or_below = torch.searchsorted(neg_sorted, query, side="right").clamp_max(n_neg[:, None])
    credit = (below + at_or_below).to(torch.float64) / 2.0  # #neg below + half #neg tied
    u_stat = torch.where(positive, credit, torch.zeros_like(credit)).sum(1)
    pairs = (n_pos * n_neg).to(torch.float64)
    return torch.where(pairs > 0, u_stat / pairs, torch.full_like(u_stat, _NAN))


def ndcg_at_k(scores: Tensor, gains: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Per-user NDCG@k with linear gains.

    With the user's real candidates ranked by score descending (rank ``r = 1, 2, ...``)::

        DCG@k  = sum_{r <= k} gain(r) / log2(r + 1)
        IDCG@k = the same sum over the user's own gains sorted descending
        NDCG@k = DCG@k / IDCG@k            (NaN when IDCG@k = 0, i.e. no positive gain)

    ``gains`` are non-negative floats (binary or graded). Ties in score are broken by candidate
    position (stable descending sort: the earlier column ranks higher), so a caller needing
    unbiased tie handling must shuffle candidate columns first. (``sklearn.metrics.ndcg_score``
    averages over tied orderings instead; the two agree on tie-free scores.)

    Returns ``[n_users]`` float64.
    """
    k = _check_k(k)
    scores, mask = _prepare(scores, gains, "gains", mask)
    g = torch.where(mask, gains.to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                               device=gains.device))
    if bool(torch.isnan(g).any()) or bool((g < 0).any()):
        raise ValueError("gains must be non-negative and not NaN for real candidates")
    top = _ranking(scores, mask, k)
    disc = _discounts(top.shape[1], scores.device)
    dcg = (g.gather(1, top) * disc).sum(1)
    ideal = torch.sort(g, dim=1, descending=True).values[:, : top.shape[1]]
    idcg = (ideal * disc).sum(1)
    return torch.where(idcg > 0, dcg / idcg, torch.full_like(dcg, _NAN))


def precision_recall_at_k(scores: Tensor, relevant: Tensor, k: int, mask: Tensor | None = None
                          ) -> tuple[Tensor, Tensor]:
    """Per-user precision@k and recall@k.

    With ``hits`` = relevant candidates among the user's top-k real candidates by score::

        precision@k = hits / k             (always k, even if the user has fewer candidates;
                                            NaN for a user with no real candidate)
        recall@k    = hits / n_relevant    (NaN when the user has no relevant candidate)

    ``relevant`` is bool (or numeric, nonzero = relevant). Ties in score are broken by candidate
    position, as in :func:`ndcg_at_k`. Returns ``(precision, recall)``, each ``[n_users]`` float64.
    """
    k = _check_k(k)
    scores, mask = _prepare(scores, relevant, "relevant", mask)
    rel = (relevant != 0) & mask
    top = _ranking(scores, mask, k)
    hits = rel.gather(1, top).sum(1).to(torch.float64)
    n_rel = rel.sum(1)
    nan = torch.full_like(hits, _NAN)
    precision = torch.where(mask.any(1), hits / k, nan)
    recall = torch.where(n_rel > 0, hits / n_rel.clamp_min(1), nan)
    return precision, recall


# --------------------------------------------------------------------------- sampled ranking


def sampled_rank_metrics(pos_scores: Tensor, neg_scores: Tensor,
                         ks: Sequence[int] = (10, 20)) -> dict[str, Tensor]:
    """MRR, HR@k and NDCG@k for one positive against ``m`` sampled negatives per case.

    For case ``i`` let ``g`` = #negatives scoring strictly higher than the positive and ``t`` =
    #negatives tied with it. Ties are resolved as the expectation under uniformly random
    tie-breaking: the positive's rank ``R`` is uniform on ``g+1, ..., g+t+1``, and::

        MRR    = E[1 / R]                      = (H(g+t+1) - H(g)) / (t+1)
        HR@k   = P(R <= k)                     = clip(k - g, 0, t+1) / (t+1)
        NDCG@k = E[1{R <= k} / log2(R + 1)]    = (D(min(g+t+1, k)) - D(min(g, k))) / (t+1)

    where ``H(n) = sum_{r<=n} 1/r`` and ``D(n) = sum_{r<=n} 1/log2(r+1)`` are read from
    precomputed cumulative tables (the only ``[n, m]`` temporaries are the two boolean
    comparisons). Without ties these are the usual ``1/R``, ``1{R<=k}`` and
    ``1{R<=k}/log2(R+1)``.

    ``pos_scores`` is ``[n]``, ``neg_scores`` ``[n, m]``. Returns a dict of ``[n]`` float64 tensors
    keyed ``"MRR"``, ``"HR@{k}"`` and ``"NDCG@{k}"`` for each ``k`` in ``ks``.
    """
    if pos_scores.dim() != 1 or neg_scores.dim() != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(f"pos_scores must be [n] and neg_scores [n, m], got shapes "
                         f"{tuple(pos_scores.shape)} and {tuple(neg_scores.shape)}")
    ks = [_check_k(k) for k in ks]
    pos = _float_scores(pos_scores)
    neg = _float_scores(neg_scores)
    if bool(torch.isnan(pos).any()) or bool(torch.isnan(neg).any()):
        raise ValueError("pos_scores and neg_scores must not contain NaN")
    device = pos.device
    m = neg.shape[1]
    col = pos[:, None]
    greater = (neg > col).sum(1)
    tied = (neg == col).sum(1)
    n_orders = (tied + 1).to(torch.float64)
    last = greater + tied + 1  # worst possible rank

    ranks = torch.arange(1, m + 2, dtype=torch.float64, device=device)
    harmonic = torch.cat([torch.zeros(1, dtype=torch.float64, device=device),
                          torch.cumsum(1.0 / ranks, 0)])  # harmonic[n] = H(n), n = 0..m+1
    out = {"MRR": (harmonic[last] - harmonic[greater]) / n_orders}

    max_k = max(ks, default=0)
    disc = torch.cat([torch.zeros(1, dtype=torch.float64, device=device),
                      torch.cumsum(_discounts(max_k, device), 0)])  # disc[n] = D(n), n = 0..max_k
    for k in ks:
        out[f"HR@{k}"] = (k - greater).clamp(0, None).minimum(tied + 1).to(torch.float64) / n_orders
        out[f"NDCG@{k}"] = (disc[last.clamp_max(k)] - disc[greater.clamp_max(k)]) / n_orders
    return out


LOWER_IS_BETTER = ("MAE", "RMSE")


def higher_is_better(metric: str) -> bool:
    """Direction of a metric by its name (``RMSE``, ``book/MAE``: lower; AUC, NDCG@k, HR@k, MRR,
    Precision@k, Recall@k: higher)."""
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER
