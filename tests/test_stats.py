"""Paired significance tests against scipy, and per-user table alignment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cdrec.stats import align_per_user, paired_tests


def paired_arrays(seed: int = 0, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Model A beats model B by a clear margin on most users (per-user NDCG-like values)."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0.1, 0.6, n)
    a = b + rng.normal(0.05, 0.03, n)
    return a, b


def test_clearly_better_model_is_significant_and_matches_scipy() -> None:
    a, b = paired_arrays()
    out = paired_tests(a, b, higher_is_better=True)
    assert out["n"] == len(a)
    assert out["mean_a"] == pytest.approx(a.mean())
    assert out["mean_b"] == pytest.approx(b.mean())
    assert out["mean_diff"] == pytest.approx((a - b).mean())
    assert out["wilcoxon_p"] == pytest.approx(
        sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
    assert out["ttest_p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_p"] < 1e-6
    assert out["better"] is True and out["significant"] is True
    assert out["alpha"] == 0.05

    # Same data, lower-is-better metric (e.g. per-user RMSE): A is now the worse model.
    worse = paired_tests(a, b, higher_is_better=False)
    assert worse["better"] is False and worse["significant"] is False
    assert worse["wilcoxon_p"] == out["wilcoxon_p"]
    # Swapping the models flips the direction only.
    swapped = paired_tests(b, a, higher_is_better=False)
    assert swapped["better"] is True and swapped["significant"] is True
    assert swapped["mean_diff"] == pytest.approx(-out["mean_diff"])


def test_noise_only_difference_is_not_significant() -> None:
    rng = np.random.default_rng(3)
    b = rng.uniform(0.1, 0.6, 60)
    a = b + rng.normal(0.0, 0.05, 60)
    out = paired_tests(a, b, higher_is_better=True, alpha=0.01)
    assert out["wilcoxon_p"] > 0.01
    assert out["significant"] is False
    assert out["alpha"] == 0.01


def test_nan_pairs_dropped_from_both_sides() -> None:
    a, b = paired_arrays(seed=1, n=40)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[[0, 5]] = np.nan
    b_nan[[5, 9, 12]] = np.nan
    keep = np.ones(40, dtype=bool)
    keep[[0, 5, 9, 12]] = False
    out = paired_tests(a_nan, b_nan, higher_is_better=True)
    ref = paired_tests(a[keep], b[keep], higher_is_better=True)
    assert out["n"] == 36
    for key in ("mean_a", "mean_b", "mean_diff", "wilcoxon_p", "ttest_p"):
        assert out[key] == pytest.approx(ref[key]), key
    assert out["wilcoxon_p"] == pytest.approx(
        sps.wilcoxon(a[keep], b[keep], zero_method="wilcox").pvalue)


def test_zero_differences_handled_like_scipy_wilcox() -> None:
    a, b = paired_arrays(seed=2, n=30)
    b[:10] = a[:10]  # ties are discarded by zero_method="wilcox"
    out = paired_tests(a, b, higher_is_better=True)
    assert out["n"] == 30
    assert out["wilcoxon_p"] == pytest.approx(
        sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
    # The zeros are discarded from the ranking (scipy then uses the normal approximation, so
    # the p-value differs from an exact test on the non-zero pairs, but the statistic does not).
    assert sps.wilcoxon(a, b, zero_method="wilcox").statistic == pytest.approx(
        sps.wilcoxon(a[10:], b[10:]).statistic)


def test_degenerate_inputs_give_nan_p_values() -> None:
    same = paired_tests([0.2, 0.4, 0.6], [0.2, 0.4, 0.6], higher_is_better=True)
    assert math.isnan(same["wilcoxon_p"]) and math.isnan(same["ttest_p"])
    assert same["better"] is False and same["significant"] is False
    single = paired_tests([0.9, np.nan], [0.1, 0.5], higher_is_better=True)
    assert single["n"] == 1 and math.isnan(single["wilcoxon_p"]) and math.isnan(single["ttest_p"])
    assert single["better"] is True and single["significant"] is False
    empty = paired_tests([np.nan], [1.0], higher_is_better=True)
    assert empty["n"] == 0 and math.isnan(empty["mean_a"]) and empty["better"] is False


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_tests([0.1, 0.2, 0.3], [0.1, 0.2], higher_is_better=True)
    with pytest.raises(ValueError, match="1-D"):
        paired_tests([[0.1, 0.2]], [[0.1, 0.2]], higher_is_better=True)


def test_align_per_user_inner_join_on_seed_and_user() -> None:
    df_a = pd.DataFrame({"seed": [0, 0, 0, 1, 1], "user": [3, 1, 2, 1, 2],
                         "NDCG@10": [0.3, 0.1, 0.2, 0.11, 0.21], "HR@10": [1, 0, 1, 0, 1]})
    # B lacks (seed 0, user 3) and has an extra (seed 1, user 7); rows in another order.
    df_b = pd.DataFrame({"user": [2, 1, 7, 2, 1], "seed": [1, 1, 1, 0, 0],
                         "NDCG@10": [0.25, 0.15, 0.9, 0.22, 0.12]})
    a, b = align_per_user(df_a, df_b, "NDCG@10")
    np.testing.assert_allclose(a, [0.1, 0.2, 0.11, 0.21])  # keys (0,1) (0,2) (1,1) (1,2)
    np.testing.assert_allclose(b, [0.12, 0.22, 0.15, 0.25])
    a_user, b_user = align_per_user(df_a[df_a.seed == 0], df_b[df_b.seed == 0], "NDCG@10",
                                    keys=("user",))
    np.testing.assert_allclose(a_user, [0.1, 0.2])
    np.testing.assert_allclose(b_user, [0.12, 0.22])


def test_align_per_user_errors() -> None:
    df_a = pd.DataFrame({"seed": [0], "user": [1], "m": [0.5]})
    df_b = pd.DataFrame({"seed": [0], "user": [2], "m": [0.4]})
    with pytest.raises(ValueError, match="share no"):
        align_per_user(df_a, df_b, "m")
    with pytest.raises(ValueError, match="lacks column"):
        align_per_user(df_a, df_b.drop(columns="m"), "m")
    dup = pd.DataFrame({"seed": [0, 0], "user": [1, 1], "m": [0.4, 0.3]})
    with pytest.raises(ValueError, match="repeats the key"):
        align_per_user(df_a, dup, "m")
