"""Paired significance tests for comparing two models on the same evaluated users.

Two models evaluated on the same held-out users (and seeds) give paired per-user metric values;
:func:`align_per_user` pairs them up from the per-user tables a run keeps, and :func:`paired_tests`
compares them with the Wilcoxon signed-rank test (no normality assumption) and the paired t-test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["align_per_user", "paired_tests"]


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per user), got shape {array.shape}")
    return array


def paired_tests(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool,
                 alpha: float = 0.05) -> dict[str, Any]:
    """Compare paired per-user metric values ``a`` (model A) and ``b`` (model B).

    Pairs where either value is NaN are dropped from both arrays before anything is computed
    (e.g. users for whom a metric is undefined). With ``d = a - b`` over the ``n`` kept pairs the
    result holds:

    * ``n``, ``mean_a``, ``mean_b``, ``mean_diff`` (``= mean(d)``);
    * ``wilcoxon_p``: two-sided ``scipy.stats.wilcoxon(a, b, zero_method="wilcox")`` (zero
      differences discarded; scipy then switches from the exact to the normal-approximation
      p-value); NaN when ``n < 2`` or every difference is zero;
    * ``ttest_p``: two-sided ``scipy.stats.ttest_rel(a, b)``; NaN when ``n < 2`` or every
      difference is zero;
    * ``better``: A's mean beats B's in the metric's direction (``higher_is_better``);
    * ``significant``: ``better and wilcoxon_p < alpha``; and ``alpha`` itself.

    Raises ``ValueError`` when ``a`` and ``b`` differ in length.
    """
    a_all = _as_vector(a, "a")
    b_all = _as_vector(b, "b")
    if a_all.shape != b_all.shape:
        raise ValueError(f"a and b must be paired (same length), got {a_all.shape[0]} and "
                         f"{b_all.shape[0]} values")
    keep = ~(np.isnan(a_all) | np.isnan(b_all))
    a_kept, b_kept = a_all[keep], b_all[keep]
    n = int(a_kept.shape[0])
    nan = float("nan")
    if n == 0:
        mean_a = mean_b = mean_diff = nan
    else:
        mean_a, mean_b = float(a_kept.mean()), float(b_kept.mean())
        mean_diff = float((a_kept - b_kept).mean())

    wilcoxon_p = ttest_p = nan
    if n >= 2 and bool(np.any(a_kept != b_kept)):
        wilcoxon_p = float(sps.wilcoxon(a_kept, b_kept, zero_method="wilcox",
                                        alternative="two-sided").pvalue)
        ttest_p = float(sps.ttest_rel(a_kept, b_kept, alternative="two-sided").pvalue)

    better = bool(mean_a > mean_b) if higher_is_better else bool(mean_a < mean_b)
    significant = better and not math.isnan(wilcoxon_p) and wilcoxon_p < alpha
    return {
        "n": n,
        "mean_a": mean_a,
        "mean_b": mean_b,
        "mean_diff": mean_diff,
        "wilcoxon_p": wilcoxon_p,
        "ttest_p": ttest_p,
        "better": better,
        "significant": bool(significant),
        "alpha": alpha,
    }


def align_per_user(df_a: pd.DataFrame, df_b: pd.DataFrame, metric: str,
                   keys: Sequence[str] = ("seed", "user")) -> tuple[np.ndarray, np.ndarray]:
    """Pair two per-user metric tables on ``keys`` and return the aligned ``metric`` columns.

    Both tables hold the ``keys`` columns and a ``metric`` column, one row per key combination
    (e.g. per seed and user). Rows are inner-joined on ``keys`` (so only cases both models were
    evaluated on are kept) and returned in key order as ``(values_a, values_b)`` float arrays,
    ready for :func:`paired_tests`.

    Raises ``ValueError`` when a column is missing, a key combination repeats within a table, or
    the join is empty.
    """
    keys = list(keys)
    for name, frame in (("df_a", df_a), ("df_b", df_b)):
        missing = [col for col in [*keys, metric] if col not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")
        duplicated = frame.duplicated(subset=keys, keep=False)
        if duplicated.any():
            row = frame.index[duplicated.to_numpy().nonzero()[0][0]]
            raise ValueError(f"{name} repeats the key {keys} (first at row {row!r}): one row per "
                             f"key combination is needed to pair the tables")
    merged = df_a[[*keys, metric]].merge(df_b[[*keys, metric]], on=keys, how="inner",
                                         suffixes=("_a", "_b"), sort=True)
    if merged.empty:
        raise ValueError(f"df_a and df_b share no {keys} combination: nothing to pair")
    return (merged[f"{metric}_a"].to_numpy(dtype=np.float64),
            merged[f"{metric}_b"].to_numpy(dtype=np.float64))
