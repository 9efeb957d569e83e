"""SSCDR, DCDCSR and CST: transfer beats the target-only floor, hand-checked pieces, implicit runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_transfer_data
from torch import nn

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.models import build_model
from cdrec.models.bases.registry import base_class
from cdrec.models.coldstart.dcdcsr import benchmark_weights, sparsity_degrees  # registers DCDCSR
from cdrec.models.coldstart.sscdr import (  # registers SSCDR
    item_points,
    point_width,
    unsupervised_term,
)
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.split import TrainView
from cdrec.stats import align_per_user, paired_tests
from cdrec.train import FitContext

QUICK = {"epochs": 40, "batch_size": 2048, "lr": 0.01}
# SSCDR needs users and items in one space; on ratings here plain MF (p.q), as in sscdr.py.
CASES = {
    "CST": {"base_config": QUICK},
    "DCDCSR": {"base_config": QUICK},
    "SSCDR": {"base": "MF", "base_config": {**QUICK, "use_bias": False}},
}


def fit(name, split, seed=0, **params):
    return build_model(name, **params).fit(split.train, split.validation,
                                           FitContext(seed=seed, progress=False))


@pytest.fixture(scope="module")
def split():
    return ColdStartUsers("src", "tgt", test_fraction=0.2, validation_fraction=0.1).split(
        make_transfer_data(), 0)


@pytest.fixture(scope="module")
def tgt(split):
    return fit("TGT", split, **QUICK)


@pytest.mark.parametrize("name", sorted(CASES))
def test_beats_target_only_on_shared_taste(split, tgt, name):
    model = fit(name, split, **CASES[name])
    ours, floor = split.test.evaluate(model), split.test.evaluate(tgt)
    assert ours["RMSE"] < 0.9 * floor["RMSE"], (name, ours, floor)
    a, b = align_per_user(split.test.per_user(model).assign(seed=0),
                          split.test.per_user(tgt).assign(seed=0), "RMSE")
    assert paired_tests(a, b, higher_is_better=False)["significant"]


def test_sscdr_needs_a_metric_space(split):
    # CML on ratings (Metric Factorization): rows [v_i, b_i] are as wide as states [u, b_u],
    # but only the first dim coordinates are a metric space: the bias takes no part in Eq. 3.
    cml = base_class("CML")(3, 4, base_class("CML").Config(dim=2), implicit=False)
    assert item_points(cml, torch.tensor([0, 3])).shape == (2, 3) and point_width(cml) == 2
    user, pos = torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[0.1, 0.0, -5.0]])
    neg = torch.tensor([[[0.3, 0.0, 5.0]]])  # farther as a point, nearer with the bias
    assert unsupervised_term(user, pos, neg, 0.5, point_width(cml)).item() == pytest.approx(
        0.5 + 0.01 - 0.09)
    # Eq. 5 moves the point towards the items' centre; the user keeps its own mapped bias.
    sscdr = build_model("SSCDR", neighbour_weight=0.5)
    sscdr.target_ = cml
    blended = sscdr._blend(torch.tensor([[1.0, 1.0, 5.0], [1.0, 1.0, 5.0]]),
                           torch.tensor([[3.0, 3.0, -5.0], [3.0, 3.0, -5.0]]),
                           torch.tensor([[True], [False]]))
    assert torch.equal(blended, torch.tensor([[2.0, 2.0, 5.0], [1.0, 1.0, 5.0]]))
    with pytest.raises(TypeError, match="one space"):  # biased MF: [p_u, b_u] vs q_i
        fit("SSCDR", split, base="MF")


# --- hand-checked pieces ------------------------------------------------------------------


def tiny_data() -> TrainView:
    """Users 0-2. Source: 4 items, user 0 rates 2, user 1 rates 1. Target: 2 items, user 0
    rates 1, user 1 rates 2, user 2 rates 1."""
    def domain(name, n_items, users, items):
        inter = Interactions(torch.tensor(users), torch.tensor(items),
                             torch.ones(len(users)))
        return Domain(name, np.arange(n_items), inter, rating_scale=(1.0, 5.0))

    data = CrossDomainData(np.arange(3), {"s": domain("s", 4, [0, 0, 1], [0, 3, 2]),
                                          "t": domain("t", 2, [0, 1, 1, 2], [1, 0, 1, 0])})
    return TrainView(data, "coldstart", "s", "t")


def test_dcdcsr_sparsity_degrees_and_benchmark_weights():
    train = tiny_data()
    user_s, item_s = sparsity_degrees(train.data["s"].interactions, 3, 4)
    assert torch.allclose(user_s, torch.tensor([2 / 4, 1 / 4, 0.0]))
    assert torch.allclose(item_s, torch.tensor([1 / 2, 0.0, 1 / 2, 1 / 2]))  # 2 active users
    user_t, item_t = sparsity_degrees(train.data["t"].interactions, 3, 2)
    assert torch.allclose(user_t, torch.tensor([1 / 2, 1.0, 1 / 2]))
    assert torch.allclose(item_t, torch.tensor([2 / 3, 2 / 3]))
    w_s, w_t = benchmark_weights(train)
    # user 0: 0.5 vs 0.5; user 1: 0.25 vs 1 (target denser); user 2: target only
    assert torch.allclose(w_s, torch.tensor([0.5, 0.2, 0.0]))
    assert torch.allclose(w_t, torch.tensor([0.5, 0.8, 1.0]))


def test_dcdcsr_benchmark_mixes_the_two_states(split):
    model = fit("DCDCSR", split, base_config={**QUICK, "epochs": 2}, epochs=2)
    users = torch.tensor([0, 5, 9])
    s, t = model.source_.user_state(users), model.target_.user_state(users)
    w_s, w_t = benchmark_weights(split.train)
    expected = w_s[users, None] * s + w_t[users, None] * t
    assert torch.allclose(model.benchmark(users, s, t), expected)
    cold = split.test.users[:4]
    assert torch.allclose(model.transferred_state(cold),
                          model.transfer_(model.source_.user_state(cold)))


def test_cst_starts_from_and_pulls_towards_the_source_coordinates(split):
    model = fit("CST", split, base_config={**QUICK, "epochs": 3}, pull=0.7)
    cold = split.test.users
    # Cold-start users have no target rows: their target state is their source state.
    assert torch.equal(model.target_.user_state(cold), model.source_.user_state(cold))
    users = torch.tensor([0, 1, 2, 0])  # a repeated user counts once per batch row
    delta = torch.tensor([[0.1] * 33, [0.0] * 33, [-0.2] * 33])
    with torch.no_grad():
        model.target_.user_factors.weight[:3] = model.source_.user_factors.weight[:3] + delta[:, :32]
        model.target_.user_bias[:3] = model.source_.user_bias[:3] + delta[:, 32]
        value = model.coordinate_penalty(users)
    expected = (2 * 33 * 0.1**2 + 33 * 0.2**2) / 4
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_sscdr_unsupervised_term_by_hand():
    user = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    pos = torch.tensor([[0.3, 0.4], [1.0, 1.0]])  # d^2 = 0.25, 1
    neg = torch.tensor([[[1.0, 0.0], [0.0, 0.1]],  # d^2 = 1, 0.01
                        [[3.0, 0.0], [1.0, 0.5]]])  # d^2 = 4, 0.25
    # row 0: [0.5 + 0.25 - 1]_+ + [0.5 + 0.25 - 0.01]_+ = 0 + 0.74
    # row 1: [0.5 + 1 - 4]_+ + [0.5 + 1 - 0.25]_+ = 0 + 1.25
    got = unsupervised_term(user, pos, neg, margin=0.5)
    assert float(got) == pytest.approx((0.74 + 1.25) / 2)


def test_sscdr_one_hop_inference_by_hand(split):
    model = fit("SSCDR", split, base="MF", base_config={**QUICK, "epochs": 2, "use_bias": False},
                epochs=1, neighbour_weight=0.25)
    model.transfer_ = nn.Identity()  # so Eq. 5 reduces to the source points themselves
    rows = split.train.data["src"].interactions
    users = torch.tensor([split.test.users[0], 3, split.test.users[0]])
    got = model.transferred_state(users)
    for k, u in enumerate(users.tolist()):
        items = rows.item[rows.user == u]
        centre = model.source_.item_factors(items).mean(0)
        expected = 0.75 * model.source_.user_state(torch.tensor(u)) + 0.25 * centre
        assert torch.allclose(got[k], expected, atol=1e-6)


# --- implicit feedback ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CST", "DCDCSR", "SSCDR"])
def test_implicit_douban_smoke(douban_sample, name):
    split = ColdStartUsers("book", "music", implicit=True).split(douban_sample, 0)
    model = fit(name, split, base_config={"epochs": 2, "batch_size": 4096},
                **({} if name == "CST" else {"epochs": 2}))
    result = split.test.evaluate(model)
    assert math.isfinite(result["AUC"]) and math.isfinite(result["NDCG@10"])
    assert 0.0 <= result["AUC"] <= 1.0
