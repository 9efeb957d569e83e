"""PTUPCDR: vectorised histories, masked attention, bridge shapes, transfer beating its floors."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

import cdrec.models.coldstart.ptupcdr  # noqa: F401  (registers PTUPCDR)
from cdrec.data.dataset import Interactions
from cdrec.models import build_model
from cdrec.models.coldstart.ptupcdr import CharacteristicEncoder, padded_histories
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.stats import align_per_user, paired_tests
from cdrec.train import FitContext

QUICK = {"epochs": 40, "batch_size": 2048, "lr": 0.01}


def fit(name, split, seed=0, context=None, **params):
    context = context or FitContext(seed=seed, progress=False)
    return build_model(name, **params).fit(split.train, split.validation, context)


@pytest.fixture(scope="module")
def synthetic_split(transfer_data):
    return ColdStartUsers("src", "tgt", test_fraction=0.2, validation_fraction=0.1).split(
        transfer_data, 0)


@pytest.fixture(scope="module")
def fitted(synthetic_split):
    context = FitContext(seed=0, progress=False)
    model = fit("PTUPCDR", synthetic_split, context=context, base_config=QUICK)
    return model, context


def _tensor(values, dtype=torch.long):
    return torch.tensor(values, dtype=dtype)


def test_histories_equal_a_hand_built_table_by_row_order():
    # user 0: items 5, 6, 7 (row order); user 1: nothing; user 2: 9; user 3: 1, 2
    inter = Interactions(_tensor([3, 0, 2, 0, 3, 0]), _tensor([1, 5, 9, 6, 2, 7]),
                         _tensor([1.0, 2.0, 3.0, 4.0, 5.0, 1.5], torch.float32))
    items, ratings, mask = padded_histories(inter, n_users=4, max_len=2)
    # the last two rows per user, oldest first, padded on the right
    assert torch.equal(items, _tensor([[6, 7], [0, 0], [9, 0], [1, 2]]))
    assert torch.equal(ratings, _tensor([[4.0, 1.5], [0, 0], [3.0, 0], [1.0, 5.0]],
                                        torch.float32))
    assert torch.equal(mask, torch.tensor([[True, True], [False, False], [True, False],
                                           [True, True]]))
    items, _, mask = padded_histories(inter, n_users=5, max_len=4)  # user 4: no rows
    assert torch.equal(items, _tensor([[5, 6, 7, 0], [0] * 4, [9, 0, 0, 0], [1, 2, 0, 0],
                                       [0] * 4]))
    assert mask.sum(1).tolist() == [3, 0, 1, 2, 0]


def test_histories_keep_the_most_recent_by_timestamp():
    inter = Interactions(_tensor([0, 0, 1, 0, 1, 0]), _tensor([10, 11, 20, 12, 21, 13]),
                         torch.ones(6), timestamp=_tensor([400, 100, 7, 300, 5, 200]))
    items, _, mask = padded_histories(inter, n_users=2, max_len=3)
    # user 0 by time: 11 (100), 13 (200), 12 (300), 10 (400): the last three, oldest first
    assert torch.equal(items, _tensor([[13, 12, 10], [21, 20, 0]]))
    assert mask.sum(1).tolist() == [3, 2]


def test_attention_sums_to_one_over_the_history_and_ignores_padding():
    torch.manual_seed(0)
    encoder = CharacteristicEncoder(dim=6, hidden=6, rating_feature=True)
    emb = torch.randn(4, 5, 6)
    rating = torch.randn(4, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0] * 5]).bool()
    a = encoder.attention(emb, mask, rating)
    assert a.shape == (4, 5)
    assert torch.allclose(a[:3].sum(1), torch.ones(3))
    assert torch.equal(a[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(a[3], torch.zeros(5))  # no history: no weight anywhere, c_u = 0
    assert torch.equal(a[2, 0], torch.tensor(1.0))
    c = encoder(emb, mask, rating)
    assert c.shape == (4, 6)
    assert torch.allclose(c[1], a[1, :2] @ emb[1, :2])
    assert torch.equal(c[3], torch.zeros(6))
    # whatever sits in the padding changes nothing
    noisy = torch.where(mask.unsqueeze(-1), emb, torch.randn_like(emb) * 100)
    assert torch.allclose(encoder(noisy, mask, rating * mask + ~mask * 9.0), c, atol=1e-6)
    # gradients stay finite with an empty row
    emb.requires_grad_(True)
    encoder(emb, mask, rating).sum().backward()
    assert torch.isfinite(emb.grad).all()


def test_fitted_shapes_attention_and_frozen_bases(fitted, synthetic_split):
    model, context = fitted
    cfg = model.config
    n_users = synthetic_split.train.data.n_users
    assert [s.stage for s in context.stages] == ["base_src", "base_tgt", "meta"]
    assert context.stages[-1].metric == "RMSE"
    assert model.history_items_.shape == (n_users, cfg.max_history)
    assert model.history_mask_.shape == model.history_ratings_.shape == (n_users, cfg.max_history)
    # every synthetic user rated 25 source items, all kept (max_history 50)
    assert model.history_mask_.sum(1).eq(25).all()
    # histories are rebuilt from the data on each fit: not copied into snapshots/checkpoints
    assert not any(key.startswith("history_") for key in model.state_dict())
    users = synthetic_split.test.users[:9]
    d_in, d_out = model.source_.user_dim, model.target_.user_dim
    assert (d_in, d_out) == (33, 33)  # biased MF: the bridge maps [p_u, b_u]
    assert model.bridge(users).shape == (9, d_in, d_out)
    state = model.transferred_state(users)
    assert state.shape == (9, d_out)
    expected = torch.bmm(model.source_.user_state(users).unsqueeze(1),
                         model.bridge(users)).squeeze(1)
    assert torch.allclose(state, expected, atol=1e-5)
    # repeated users (one row per scored pair) get their own bridge's state
    repeated = users[torch.tensor([3, 0, 3, 8, 0])]
    assert torch.allclose(model.transferred_state(repeated), state[[3, 0, 3, 8, 0]])
    a = model.attention(users)
    assert torch.allclose(a.sum(1), torch.ones(9))
    assert float(a[~model.history_mask_[users]].abs().sum()) == 0.0
    assert not any(p.requires_grad for p in [*model.source_.parameters(),
                                             *model.target_.parameters()])
    # cold users are scored with the bridged state, warm users with their own
    items = torch.arange(9)
    cold = model.target_.score_with(state, items)
    assert torch.allclose(model.predict("tgt", users, items), cold)


def test_ptupcdr_beats_target_only_and_item_mean_on_shared_taste(fitted, synthetic_split):
    model, _ = fitted
    t = synthetic_split.test.evaluate(model)
    for name, params in (("TGT", QUICK), ("ItemMean", {})):
        other = fit(name, synthetic_split, **params)
        o = synthetic_split.test.evaluate(other)
        assert t["RMSE"] < 0.8 * o["RMSE"], (name, t, o)
        a, b = align_per_user(synthetic_split.test.per_user(model).assign(seed=0),
                              synthetic_split.test.per_user(other).assign(seed=0), "RMSE")
        result = paired_tests(a, b, higher_is_better=False)
        assert result["significant"], (name, result)


def test_config_defaults_and_the_published_history_form(synthetic_split):
    cfg = build_model("PTUPCDR").config
    assert (cfg.meta_dim, cfg.max_history, cfg.lr, cfg.batch_size) == (50, 50, 0.01, 256)
    with pytest.raises(ValidationError):
        build_model("PTUPCDR", max_history=0)
    with pytest.raises(ValidationError, match="meta_dimm"):
        build_model("PTUPCDR", meta_dimm=8)
    # liked items only, attention on embeddings alone (the public code's form)
    model = fit("PTUPCDR", synthetic_split, base_config={**QUICK, "epochs": 2}, epochs=1,
                min_rating=3.0, rating_feature=False)
    src = synthetic_split.train.data["src"].interactions
    liked = torch.bincount(src.user[src.rating > 3], minlength=synthetic_split.train.data.n_users)
    assert torch.equal(model.history_mask_.sum(1), liked.clamp_max(50))
    assert model.history_ratings_ is None


@pytest.mark.parametrize("implicit", [False, True])
def test_smoke_on_the_douban_sample(douban_sample, implicit):
    split = ColdStartUsers("book", "music", implicit=implicit).split(douban_sample, 0)
    model = fit("PTUPCDR", split, base_config={"epochs": 3, "dim": 16}, epochs=2)
    metrics = split.test.evaluate(model)
    assert set(metrics) == ({"AUC", "NDCG@10"} if implicit else {"MAE", "RMSE"})
    assert all(math.isfinite(v) for v in metrics.values()), metrics
