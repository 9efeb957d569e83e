"""Metrics against scikit-learn, pandas and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, ndcg_score, roc_auc_score

from cdrec.metrics import (
    auc,
    grouped_mean,
    mae,
    ndcg_at_k,
    per_user_errors,
    precision_recall_at_k,
    rmse,
    sampled_rank_metrics,
)

SEEDS = [0, 1, 2, 3]


def random_mask(gen: torch.Generator, n_users: int, n_cand: int, min_cand: int = 1) -> torch.Tensor:
    """Each user keeps a random number of real candidates, scattered over the row."""
    counts = torch.randint(min_cand, n_cand + 1, (n_users,), generator=gen)
    order = torch.rand(n_users, n_cand, generator=gen).argsort(1)
    return order < counts[:, None]


# ----------------------------------------------------------------------------- rating errors


@pytest.mark.parametrize("seed", SEEDS)
def test_mae_rmse_match_sklearn(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(200, generator=gen) * 5
    target = torch.randint(1, 6, (200,), generator=gen).float()
    assert mae(pred, target) == pytest.approx(mean_absolute_error(target, pred), rel=1e-6)
    assert rmse(pred, target) == pytest.approx(math.sqrt(mean_squared_error(target, pred)),
                                               rel=1e-6)


def test_rating_errors_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mae(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        rmse(torch.zeros(0), torch.zeros(0))


def test_grouped_mean_small() -> None:
    ids, means = grouped_mean(torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([7, 3, 7, 3]))
    assert ids.tolist() == [3, 7]
    assert means.tolist() == [6.0, 2.0]


@pytest.mark.parametrize("seed", SEEDS)
def test_per_user_errors_match_pandas_groupby(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 500
    users = torch.randint(0, 40, (n,), generator=gen) * 3  # sparse, unsorted ids
    pred = torch.rand(n, generator=gen) * 5
    target = torch.randint(1, 6, (n,), generator=gen).float()
    out = per_user_errors(pred, target, users)

    err = (pred.double() - target.double()).numpy()
    frame = pd.DataFrame({"user": users.numpy(), "abs": np.abs(err), "sq": err**2})
    expected = frame.groupby("user").agg(mae=("abs", "mean"), mse=("sq", "mean"),
                                         n=("abs", "size"))
    np.testing.assert_array_equal(out["user"].numpy(), expected.index.to_numpy())
    np.testing.assert_allclose(out["mae"].numpy(), expected["mae"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(out["rmse"].numpy(), np.sqrt(expected["mse"].to_numpy()),
                               rtol=1e-12)
    np.testing.assert_array_equal(out["n"].numpy(), expected["n"].to_numpy())


# ----------------------------------------------------------------------------- AUC


def sklearn_auc_rows(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    out = []
    for s, y, m in zip(scores.numpy(), labels.numpy(), mask.numpy(), strict=True):
        y_real = y[m]
        out.append(roc_auc_score(y_real, s[m]) if 0 < y_real.sum() < len(y_real) else np.nan)
    return np.array(out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [None, 1, 0])  # continuous, heavy ties, extreme ties
def test_auc_matches_sklearn_with_ties_and_padding(seed: int, decimals: int | None) -> None:
    gen = torch.Generator().manual_seed(seed)
    n_users, n_cand = 60, 30
    scores = torch.randn(n_users, n_cand, generator=gen)
    if decimals is not None:
        scores = torch.round(scores, decimals=decimals)
    labels = torch.rand(n_users, n_cand, generator=gen) < 0.3
    mask = random_mask(gen, n_users, n_cand)
    # Garbage in padded slots must not matter.
    scores = torch.where(mask, scores, torch.full_like(scores, 1e6))
    got = auc(scores, labels, mask).numpy()
    np.testing.assert_allclose(got, sklearn_auc_rows(scores, labels, mask), rtol=1e-12,
                               equal_nan=True)
    assert np.isfinite(got).sum() > n_users // 2  # most rows defined: the test has teeth


def test_auc_without_mask_and_with_float_labels() -> None:
    gen = torch.Generator().manual_seed(5)
    scores = torch.round(torch.randn(20, 15, generator=gen), decimals=1)
    labels = (torch.rand(20, 15, generator=gen) < 0.5).float()
    full = torch.ones_like(labels, dtype=torch.bool)
    np.testing.assert_allclose(auc(scores, labels).numpy(),
                               sklearn_auc_rows(scores, labels, full), equal_nan=True)


def test_auc_hand_worked_and_undefined_rows() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1],   # pos: 0.9, 0.5; neg: 0.5, 0.1
                           [0.3, 0.2, 0.1, 0.0],   # no positive
                           [float("inf"), 1.0, float("inf"), -float("inf")]])
    labels = torch.tensor([[1, 1, 0, 0],
                           [0, 0, 0, 0],
                           [1, 0, 0, 1]])
    got = auc(scores, labels)
    # Row 0: pairs (0.9>0.5)=1, (0.9>0.1)=1, (0.5=0.5)=0.5, (0.5>0.1)=1 -> 3.5/4.
    assert got[0].item() == pytest.approx(3.5 / 4)
    assert math.isnan(got[1].item())
    # Row 2: pos {inf, -inf}, neg {1, inf}: inf>1 = 1, inf=inf = .5, -inf < both = 0 -> 1.5/4.
    assert got[2].item() == pytest.approx(1.5 / 4)


def test_auc_rejects_nan_and_non_binary_labels() -> None:
    with pytest.raises(ValueError, match="NaN"):
        auc(torch.tensor([[float("nan"), 1.0]]), torch.tensor([[1, 0]]))
    # NaN in a padded slot is fine.
    masked = auc(torch.tensor([[float("nan"), 1.0, 0.0]]), torch.tensor([[1, 1, 0]]),
                 torch.tensor([[False, True, True]]))
    assert masked.item() == 1.0
    with pytest.raises(ValueError, match="binary"):
        auc(torch.tensor([[0.1, 1.0]]), torch.tensor([[2, 0]]))


# ----------------------------------------------------------------------------- NDCG, P/R


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 5, 10, 50])
@pytest.mark.parametrize("graded", [False, True])
def test_ndcg_matches_sklearn_on_tie_free_scores(seed: int, k: int, graded: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    n_users, n_cand = 40, 25
    scores = torch.rand(n_users, n_cand, generator=gen, dtype=torch.float64)
    if graded:
        gains = torch.randint(0, 4, (n_users, n_cand), generator=gen).double()
    else:
        gains = (torch.rand(n_users, n_cand, generator=gen) < 0.2).double()
    mask = random_mask(gen, n_users, n_cand, min_cand=2)
    # Padding carries large scores and gains that must be ignored.
    scores = torch.where(mask, scores, torch.full_like(scores, 9.0))
    gains = torch.where(mask, gains, torch.full_like(gains, 5.0))
    got = ndcg_at_k(scores, gains, k, mask).numpy()
    expected = []
    for s, g, m in zip(scores.numpy(), gains.numpy(), mask.numpy(), strict=True):
        g_real = g[m]
        expected.append(ndcg_score(g_real[None], s[m][None], k=k) if g_real.sum() > 0 else np.nan)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-12, equal_nan=True)


def test_ndcg_hand_worked_and_tie_rule() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.7], [0.5, 0.5, 0.1], [0.3, 0.2, 0.1]])
    gains = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    got = ndcg_at_k(scores, gains, k=2)
    # Row 0: DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
    assert got[0].item() == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # Row 1: tie at 0.5 broken by position, so the gain-1 item (column 1) ranks 2nd.
    assert got[1].item() == pytest.approx(1 / math.log2(3))
    assert math.isnan(got[2].item())


def test_ndcg_real_minus_inf_ranks_before_padding() -> None:
    # A real candidate scored -inf must still outrank padding (which sits earlier in the row).
    scores = torch.tensor([[0.0, -float("inf")]])
    gains = torch.tensor([[0.0, 1.0]])
    mask = torch.tensor([[False, True]])
    assert ndcg_at_k(scores, gains, 1, mask).item() == 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_precision_recall_match_direct_computation(seed: int, k: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n_users, n_cand = 30, 20
    scores = torch.rand(n_users, n_cand, generator=gen)
    relevant = torch.rand(n_users, n_cand, generator=gen) < 0.25
    mask = random_mask(gen, n_users, n_cand)
    precision, recall = precision_recall_at_k(scores, relevant, k, mask)
    for u in range(n_users):  # the test may loop; the library may not
        s, r = scores[u][mask[u]].numpy(), relevant[u][mask[u]].numpy()
        hits = r[np.argsort(-s, kind="stable")[:k]].sum()
        assert precision[u].item() == pytest.approx(hits / k)
        if r.sum() == 0:
            assert math.isnan(recall[u].item())
        else:
            assert recall[u].item() == pytest.approx(hits / r.sum())


def test_precision_recall_hand_worked() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    relevant = torch.tensor([[True, True, False, False]])
    precision, recall = precision_recall_at_k(scores, relevant, k=2)
    assert precision.item() == 0.5 and recall.item() == 0.5
    # k beyond the candidate count still divides precision by k.
    precision, recall = precision_recall_at_k(scores, relevant, k=8)
    assert precision.item() == 2 / 8 and recall.item() == 1.0


def test_ranking_metrics_validate_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        ndcg_at_k(torch.zeros(3), torch.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(torch.zeros(2, 3), torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="mask must be a bool"):
        precision_recall_at_k(torch.zeros(2, 3), torch.zeros(2, 3), 1, torch.ones(2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at_k(torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), 1)


# ----------------------------------------------------------------------------- sampled ranking


def test_sampled_rank_metrics_hand_worked_ties() -> None:
    # Positive tied with one negative, the other negative below: rank is 1 or 2, each w.p. 1/2.
    out = sampled_rank_metrics(torch.tensor([0.5]), torch.tensor([[0.5, 0.1]]), ks=(1, 2))
    assert out["HR@1"].item() == pytest.approx(0.5)
    assert out["MRR"].item() == pytest.approx((1 + 1 / 2) / 2)
    assert out["NDCG@1"].item() == pytest.approx(0.5)
    assert out["HR@2"].item() == pytest.approx(1.0)
    assert out["NDCG@2"].item() == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert set(out) == {"MRR", "HR@1", "NDCG@1", "HR@2", "NDCG@2"}


def test_sampled_rank_metrics_no_ties_hand_worked() -> None:
    out = sampled_rank_metrics(torch.tensor([0.5, 2.0]), torch.tensor([[0.9, 0.7, 0.1],
                                                                      [0.0, 1.0, 1.5]]), ks=(2,))
    # Case 0: rank 3; case 1: rank 1.
    assert out["MRR"].tolist() == pytest.approx([1 / 3, 1.0])
    assert out["HR@2"].tolist() == [0.0, 1.0]
    assert out["NDCG@2"].tolist() == pytest.approx([0.0, 1.0])


def brute_expectation(pos: float, neg: np.ndarray, k: int) -> dict[str, float]:
    g, t = int((neg > pos).sum()), int((neg == pos).sum())
    ranks = np.arange(g + 1, g + t + 2)
    return {"MRR": float(np.mean(1 / ranks)),
            f"HR@{k}": float(np.mean(ranks <= k)),
            f"NDCG@{k}": float(np.mean((ranks <= k) / np.log2(ranks + 1)))}


@pytest.mark.parametrize("seed", SEEDS)
def test_sampled_rank_metrics_match_brute_force_with_heavy_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, m = 200, 99
    neg = torch.randint(0, 12, (n, m), generator=gen).float()  # heavy ties
    pos = torch.randint(0, 12, (n,), generator=gen).float()
    ks = (1, 5, 10, 20)
    out = sampled_rank_metrics(pos, neg, ks)
    for i in range(n):
        for k in ks:
            expected = brute_expectation(pos[i].item(), neg[i].numpy(), k)
            for name, value in expected.items():
                assert out[name][i].item() == pytest.approx(value, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
def test_sampled_rank_metrics_agree_with_full_list_metrics(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, m, k = 50, 30, 10
    pos = torch.rand(n, generator=gen, dtype=torch.float64)
    neg = torch.rand(n, m, generator=gen, dtype=torch.float64)
    out = sampled_rank_metrics(pos, neg, ks=(k,))
    scores = torch.cat([pos[:, None], neg], 1)
    gains = torch.zeros_like(scores)
    gains[:, 0] = 1.0
    torch.testing.assert_close(out[f"NDCG@{k}"], ndcg_at_k(scores, gains, k))
    _, recall = precision_recall_at_k(scores, gains.bool(), k)
    torch.testing.assert_close(out[f"HR@{k}"], recall)
    # AUC of the positive against the negatives is 1 - g/m without ties.
    rank = (neg > pos[:, None]).sum(1) + 1
    torch.testing.assert_close(out["MRR"], 1.0 / rank.double())
    torch.testing.assert_close(auc(scores, gains), 1 - (rank - 1).double() / m)


def test_sampled_rank_metrics_validate() -> None:
    with pytest.raises(ValueError, match=r"\[n, m\]"):
        sampled_rank_metrics(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        sampled_rank_metrics(torch.tensor([float("nan")]), torch.zeros(1, 2))
