"""NeuMF (He et al., WWW 2017, Sec. 3.4) and NCF-joint (DML's merged-domain baseline): the
forward pass against a hand computation, gradients into both towers, NeuMF above the ItemMean
floor on the shipped sample, and NCF-joint's merged item index and cross-domain dependence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.models import available_models, build_model
from cdrec.models.bases.neumf import NeuMFBase, NeuMFConfig
from cdrec.models.bases.registry import BASES
from cdrec.models.bases.single_domain import merge_domains
from cdrec.scenarios.kfold_rating import KFoldRating
from cdrec.split import TrainView
from cdrec.train import FitContext


def relu(x: float) -> float:
    return max(0.0, x)


def tiny_base(implicit: bool, sparse: bool = False) -> NeuMFBase:
    """dim 2 (GMF), tower [4, 3, 2] (MLP embeddings of 2 per side): rows [g1, g2, m1, m2]."""
    config = NeuMFConfig(dim=2, layers=[4, 3, 2], sparse=sparse)
    base = NeuMFBase(2, 3, config, implicit=implicit, global_mean=0.0 if implicit else 3.5,
                     generator=torch.Generator().manual_seed(0))
    linear1, linear2 = base.mlp[0], base.mlp[2]
    with torch.no_grad():
        base.user_factors.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 1.0],
                                                     [0.3, 0.2, -1.0, 2.0]]))
        base.item_factors.weight.copy_(torch.tensor([[2.0, 1.0, -0.5, 0.25],
                                                     [0.0, 3.0, 1.0, 1.0],
                                                     [1.0, 1.0, 1.0, -1.0]]))
        linear1.weight.copy_(torch.tensor([[1.0, 0.0, -1.0, 2.0],
                                           [0.5, 0.5, 0.5, 0.5],
                                           [-1.0, 1.0, 0.0, 0.0]]))
        linear1.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
        linear2.weight.copy_(torch.tensor([[1.0, -1.0, 2.0], [0.0, 1.0, -3.0]]))
        linear2.bias.copy_(torch.tensor([0.5, 0.0]))
        base.h.copy_(torch.tensor([0.5, -1.0, 2.0, 1.5]))
        if not implicit:
            base.item_bias.copy_(torch.tensor([0.2, -0.1, 0.3]))
    return base


def hand_score(base: NeuMFBase, user: int, item: int) -> float:
    """Eq. 8 (GMF product), Eq. 10 (ReLU tower over [p^M; q^M]), Eq. 12 (h over both), in
    plain Python."""
    p = base.user_factors.weight[user].tolist()
    q = base.item_factors.weight[item].tolist()
    w1, b1 = base.mlp[0].weight.tolist(), base.mlp[0].bias.tolist()
    w2, b2 = base.mlp[2].weight.tolist(), base.mlp[2].bias.tolist()
    h = base.h.tolist()
    gmf = [p[0] * q[0], p[1] * q[1]]
    x = [p[2], p[3], q[2], q[3]]
    hidden = [relu(sum(w * v for w, v in zip(row, x, strict=True)) + b)
              for row, b in zip(w1, b1, strict=True)]
    mlp = [relu(sum(w * v for w, v in zip(row, hidden, strict=True)) + b)
           for row, b in zip(w2, b2, strict=True)]
    score = sum(a * b for a, b in zip(h, gmf + mlp, strict=True))
    if not base.implicit:
        score += float(base.global_mean) + float(base.item_bias[item].detach())
    return score


# --- registration and configuration --------------------------------------------------------

def test_registered_names_and_defaults():
    models = available_models()
    assert "NeuMF" in BASES and models["NeuMF"].base_name == "NeuMF"
    assert models["NeuMF"].Config is NeuMFConfig and models["NCF-joint"].Config is NeuMFConfig
    assert {"EMCDR_NeuMF", "TMCDR_NeuMF", "PTUPCDR_NeuMF"} <= set(models)  # transfer can pretrain it
    config = build_model("NeuMF").config
    # The paper's predictive-factors pyramid, k = 16: tower [64, 32, 16] over 32 + 32 entries.
    assert config.dim == 16 and config.tower_sizes() == [64, 32, 16] and config.mlp_dim == 32
    assert (config.lr, config.batch_size, config.n_neg) == (0.001, 256, 4)
    assert build_model("NeuMF", dim=8).config.tower_sizes() == [32, 16, 8]
    base = NeuMFBase(5, 7, config, implicit=True)
    assert base.user_dim == 16 + 32 and base.item_factors.weight.shape == (7, 48)
    assert base.h.shape == (16 + 16,)
    with pytest.raises(ValidationError, match="even"):
        build_model("NeuMF", layers=[7, 4])
    with pytest.raises(ValidationError, match="layers"):
        build_model("NCF-joint", layers=[8])


# --- the forward pass and its gradients ---------------------------------------------------

@pytest.mark.parametrize("implicit", [True, False])
def test_forward_matches_the_hand_computation(implicit):
    base = tiny_base(implicit)
    users = torch.tensor([0, 0, 0, 1, 1, 1])
    items = torch.tensor([0, 1, 2, 0, 1, 2])
    expected = torch.tensor([hand_score(base, u, i) for u, i in zip(users.tolist(),
                                                                   items.tolist(), strict=True)])
    with torch.no_grad():
        got = base(users, items)
        assert torch.allclose(got, expected, atol=1e-5), (got, expected)
        # One worked value: user 0, item 0. GMF [2, -2]; MLP input [0.5, 1, -0.5, 0.25]:
        # layer 1 relu([1.6, 0.425, 0.5]) = [1.6, 0.425, 0.5], layer 2 relu([2.675, -1.075])
        # = [2.675, 0]; h . [2, -2, 2.675, 0] = 1 + 2 + 5.35.
        assert float(got[0]) == pytest.approx(8.35 + (0.0 if implicit else 3.5 + 0.2), abs=1e-5)
        # The other layouts: [B, 1, D] states with [B, n] items, and every item per user.
        state = base.user_state(torch.tensor([0, 1]))
        grid = base.score_with(state.unsqueeze(1), torch.arange(3).expand(2, -1))
        assert torch.allclose(grid.flatten(), expected, atol=1e-5)
        assert torch.allclose(base.score_items(state, torch.arange(3)).flatten(), expected,
                              atol=1e-5)


def test_a_gradient_reaches_both_towers():
    base = tiny_base(implicit=True)
    users, items = torch.tensor([0, 1]), torch.tensor([0, 2])
    negatives = torch.tensor([[1, 2], [0, 1]])
    base.training_loss(users, items, negatives).backward()
    user_grad, item_grad = base.user_factors.weight.grad, base.item_factors.weight.grad
    assert user_grad is not None and item_grad is not None
    for grad in (user_grad, item_grad):
        assert float(grad[:, :2].abs().sum()) > 0, "no gradient into the GMF embeddings"
        assert float(grad[:, 2:].abs().sum()) > 0, "no gradient into the MLP embeddings"
    for name, p in base.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert not base.item_bias.requires_grad  # implicit feedback: no item bias


def test_sparse_rows_cover_both_towers_embeddings():
    base = tiny_base(implicit=False, sparse=True)
    assert {id(p) for p in base.sparse_rows()} == {
        id(base.user_factors.weight), id(base.item_factors.weight), id(base.item_bias)}
    base.training_loss(torch.tensor([0, 1]), torch.tensor([0, 2]),
                       torch.tensor([4.0, 2.0])).backward()
    grad = base.user_factors.weight.grad
    assert grad is not None and grad.is_sparse
    dense = grad.to_dense()
    assert float(dense[:, :2].abs().sum()) > 0 and float(dense[:, 2:].abs().sum()) > 0


def test_a_user_at_the_prior_gets_the_item_side_prediction():
    base = tiny_base(implicit=False)
    base.reset_users(torch.tensor([1]))
    with torch.no_grad():
        zero = base.user_state(torch.tensor([1]))
        assert float(zero.abs().sum()) == 0.0
        scores = base(torch.tensor([1, 1]), torch.tensor([0, 1]))
    # GMF contributes 0; the MLP still sees the item's embedding, so items differ.
    assert float(scores[0]) != pytest.approx(float(scores[1]))


# --- NeuMF on the shipped sample -----------------------------------------------------------

@pytest.fixture(scope="module")
def kfold_split(douban_sample):
    return KFoldRating(k=5, validation_fraction=0.1).split(douban_sample, 0)


def fit(name, split, **params):
    return build_model(name, **params).fit(split.train, split.validation,
                                           FitContext(seed=0, progress=False))


def test_neumf_beats_the_item_mean_floor_in_kfold_rating(kfold_split):
    floor = kfold_split.test.evaluate(fit("ItemMean", kfold_split))
    neumf = kfold_split.test.evaluate(fit("NeuMF", kfold_split))  # defaults; stops early
    assert neumf["RMSE"] < floor["RMSE"], (neumf, floor)
    for domain in ("book", "music"):
        assert neumf[f"{domain}/RMSE"] < floor[f"{domain}/RMSE"], domain


# --- NCF-joint ----------------------------------------------------------------------------

def test_merge_domains_shifts_each_domains_items(kfold_split):
    train = kfold_split.train
    merged, offsets = merge_domains(train, ["music", "book"])
    book, music = train.data["book"], train.data["music"]
    assert offsets == {"music": 0, "book": music.n_items}
    one = merged.data["music"]
    assert list(merged.data.domains) == ["music"] and merged.target == "music"
    assert one.n_items == music.n_items + book.n_items
    assert len(one.interactions) == len(music.interactions) + len(book.interactions)
    tail = one.interactions.select(torch.arange(len(music.interactions), len(one.interactions)))
    assert torch.equal(tail.item, book.interactions.item + music.n_items)
    assert torch.equal(tail.rating, book.interactions.rating)
    assert list(one.item_ids[music.n_items:]) == list(book.item_ids)


def test_ncf_joint_predicts_each_domain_with_its_own_items(kfold_split):
    model = fit("NCF-joint", kfold_split, epochs=3)
    data = kfold_split.train.data
    assert model.offsets_ == {"book": 0, "music": data["book"].n_items}
    assert model.neumf.n_items == data["book"].n_items + data["music"].n_items
    users = torch.tensor([0, 5, 9, 5])
    items = torch.tensor([0, 3, 7, data["music"].n_items - 1])
    with torch.no_grad():
        assert torch.equal(model.predict("music", users, items),
                           model.neumf(users, items + data["book"].n_items))
        assert torch.equal(model.predict("book", users, items), model.neumf(users, items))
    assert model.score_users("music", users[:2], data["music"].n_items).shape == (
        2, data["music"].n_items)
    top = model.recommend("music", data.user_ids[:3], k=5)
    assert set(top["item"]) <= set(data["music"].item_ids)
    with pytest.raises(KeyError, match="movie"):
        model.predict("movie", users, items)


def test_ncf_joint_music_predictions_depend_on_book_ratings(kfold_split):
    """Shuffling the book ratings among the book rows (same rows, same global mean) changes
    the music predictions: the domains share one model."""
    train = kfold_split.train
    book = train.data["book"]
    perm = torch.randperm(len(book.interactions), generator=torch.Generator().manual_seed(1))
    shuffled = book.with_interactions(book.interactions.with_rating(
        book.interactions.rating[perm]))
    other = TrainView(train.data.replace_domains({"book": shuffled,
                                                  "music": train.data["music"]}),
                      train.scenario, train.source, train.target, train.implicit)
    users = torch.arange(50)
    items = torch.arange(50) % train.data["music"].n_items
    predictions = []
    for view in (train, other):
        model = build_model("NCF-joint", epochs=3).fit(view, None,
                                                       FitContext(seed=0, progress=False))
        predictions.append(model.predict("music", users, items))
    assert not torch.allclose(predictions[0], predictions[1], atol=1e-4)
    # The same data and seed give the same predictions: the difference is the book ratings.
    again = build_model("NCF-joint", epochs=3).fit(train, None, FitContext(seed=0,
                                                                           progress=False))
    assert torch.equal(again.predict("music", users, items), predictions[0])


def test_ncf_joint_trains_negatives_of_each_positives_own_domain(monkeypatch):
    """Implicit feedback: a positive's sampled negatives come from its own domain's slice of
    the merged index."""
    from cdrec.models.joint import ncf_joint

    rng = np.random.default_rng(0)
    domains = {}
    for name, n_items in (("a", 5), ("b", 7)):
        users = np.repeat(np.arange(6), 2)
        items = rng.integers(0, n_items, users.shape)
        domains[name] = Domain(name, np.arange(n_items), Interactions(
            torch.from_numpy(users), torch.from_numpy(items), torch.ones(len(users))))
    train = TrainView(CrossDomainData(np.arange(6), domains), "leave_one_out", implicit=True)
    batches = []
    real = ncf_joint.fit_stage

    def capture(module, loss, epoch_data, *args, **kwargs):
        batches.append(epoch_data(torch.Generator().manual_seed(0)))
        return real(module, loss, epoch_data, *args, **kwargs)

    monkeypatch.setattr(ncf_joint, "fit_stage", capture)
    build_model("NCF-joint", epochs=1, batch_size=4).fit(train, None,
                                                         FitContext(seed=0, progress=False))
    _, items, negatives = batches[0]
    in_b = items >= 5
    assert int(in_b.sum()) == len(domains["b"].interactions)
    assert bool((negatives[~in_b] < 5).all()) and bool((negatives[in_b] >= 5).all())
    assert bool((negatives < 12).all())
