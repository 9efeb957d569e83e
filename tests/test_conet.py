"""CoNet: the cross connection unit by hand, a live cross term, partner sampling, errors, and
CoNet beating the ItemMean floor on the shipped Douban sample (dual-target k-fold)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from cdrec.data.dataset import CrossDomainData
from cdrec.models import build_model
from cdrec.models.joint.conet import CoNet, CrossNetworks, PartnerSampler
from cdrec.scenarios.kfold_rating import KFoldRating
from cdrec.train import FitContext

QUICK = {"epochs": 3, "patience": 1}  # the paper's settings otherwise; ~3 s on the sample


def _set(layer: torch.nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


@pytest.fixture
def tiny() -> CrossNetworks:
    """Two 2 -> 2 networks with one cross unit, weights set by hand."""
    net = CrossNetworks([2, 2], cross_layers=1)
    _set(net.layers[0][0], [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    _set(net.layers[1][0], [[2.0, 0.0], [0.0, -1.0]], [0.5, 0.0])
    _set(net.heads[0], [[1.0, -2.0]], [0.25])
    _set(net.heads[1], [[0.5, 3.0]], [-1.0])
    with torch.no_grad():
        net.transfer[0].copy_(torch.tensor([[0.5, 1.0], [-1.0, 0.0]]))
    return net


def test_cross_unit_against_a_hand_computation(tiny):
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    # a' = relu(W_A a + b_A + H b) = relu([1, 2] + [0.5, -3]) = [1.5, 0]
    # b' = relu(W_B b + b_B + H a) = relu([6.5, 1] + [2.5, -1]) = [9, 0]
    new_a, new_b = tiny.cross_unit(0, a, b, torch.ones(1))
    assert torch.allclose(new_a, torch.tensor([[1.5, 0.0]]))
    assert torch.allclose(new_b, torch.tensor([[9.0, 0.0]]))
    # Outputs: 1.5 * 1 + 0 * -2 + 0.25 = 1.75 and 9 * 0.5 + 0 * 3 - 1 = 3.5.
    out_a, out_b = tiny(a, b, torch.ones(1))
    assert torch.allclose(out_a, torch.tensor([1.75])) and torch.allclose(out_b, torch.tensor([3.5]))
    # Without a partner (live = 0) each network runs alone: relu([1, 2]), relu([6.5, 1]).
    alone_a, alone_b = tiny.cross_unit(0, a, b, torch.zeros(1))
    assert torch.allclose(alone_a, torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(alone_b, torch.tensor([[6.5, 1.0]]))


def test_sconet_penalty_is_the_l1_norm_of_the_transfer_matrices(tiny):
    assert float(tiny.l1().detach()) == pytest.approx(0.5 + 1.0 + 1.0 + 0.0)


def test_domain_a_loss_reaches_h_and_domain_b_network():
    torch.manual_seed(0)
    net = CrossNetworks([6, 4, 3, 2], cross_layers=2)  # cross units on 6 -> 4 and 4 -> 3
    x_a, x_b = torch.randn(5, 6), torch.randn(5, 6, requires_grad=True)
    out_a, _ = net(x_a, x_b, torch.ones(5))
    out_a.pow(2).sum().backward()  # domain A's loss only
    for h in net.transfer:
        assert h.grad is not None and float(h.grad.abs().sum()) > 0
    # B's input (its embeddings) feeds H^0, B's first layer feeds H^1: both reached.
    assert x_b.grad is not None and float(x_b.grad.abs().sum()) > 0
    first_b = net.layers[1][0]
    assert first_b.weight.grad is not None and float(first_b.weight.grad.abs().sum()) > 0
    # B's later layers and output feed no cross unit: A's loss does not reach them.
    assert net.layers[1][1].weight.grad is None and net.heads[1].weight.grad is None
    # With no partner (live = 0) nothing of B is reached from A's loss.
    net.zero_grad(set_to_none=True)
    x_b.grad = None
    out_a, _ = net(x_a, x_b, torch.zeros(5))
    out_a.pow(2).sum().backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in net.layers[1].parameters())
    assert x_b.grad is None or float(x_b.grad.abs().sum()) == 0


def test_partners_are_rows_of_the_same_user():
    users = torch.tensor([2, 0, 2, 2, 0, 4])  # user 1 and 3 have no rows
    sampler = PartnerSampler(users, n_users=5)
    anchors = torch.tensor([0, 1, 2, 3, 4] * 200)
    rows, has = sampler.draw(anchors, torch.Generator().manual_seed(0))
    assert torch.equal(has, torch.isin(anchors, users))
    assert torch.equal(users[rows[has]], anchors[has])
    # Uniform over the user's rows: user 2's three rows are each drawn.
    assert set(rows[anchors == 2].tolist()) == {0, 2, 3}
    again, _ = sampler.draw(anchors, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)


@pytest.fixture(scope="module")
def kfold_split(douban_sample):
    return KFoldRating(k=5).split(douban_sample, 0)


@pytest.fixture(scope="module")
def fitted(kfold_split):
    model = build_model("CoNet", **QUICK)
    return model.fit(kfold_split.train, kfold_split.validation,
                     FitContext(seed=0, progress=False))


def test_every_rating_anchors_one_row_with_a_partner_of_its_user(kfold_split, fitted):
    train = kfold_split.train
    inters = [train.data[n].interactions for n in fitted.domains_]
    epoch = fitted._epoch_data(inters, [train.data[n].n_items for n in fitted.domains_],
                               train.data.n_users, implicit=False)
    users, item_a, item_b, y_a, y_b, w_a, w_b, live = epoch(torch.Generator().manual_seed(0))
    n_a, n_b = len(inters[0]), len(inters[1])
    assert users.shape[0] == n_a + n_b
    assert torch.equal(item_a[:n_a], inters[0].item) and torch.equal(y_a[:n_a], inters[0].rating)
    assert torch.equal(item_b[n_a:], inters[1].item) and torch.equal(y_b[n_a:], inters[1].rating)
    assert torch.equal(w_a[:n_a], torch.ones(n_a)) and torch.equal(w_b[n_a:], torch.ones(n_b))
    assert float(w_b[:n_a].abs().sum()) == 0 == float(w_a[n_a:].abs().sum())  # partner_weight 0
    # A partner is one of the user's own ratings in the other domain.
    key_b = set(zip(inters[1].user.tolist(), inters[1].item.tolist(), inters[1].rating.tolist(),
                    strict=True))
    live_a = live[:n_a].bool()
    picked = zip(users[:n_a][live_a].tolist(), item_b[:n_a][live_a].tolist(),
                 y_b[:n_a][live_a].tolist(), strict=True)
    assert all(row in key_b for row in picked)
    has_b = torch.isin(inters[0].user, inters[1].user)
    assert torch.equal(live_a, has_b)


def test_prediction_uses_the_users_other_domain_profile(kfold_split, fitted):
    train = kfold_split.train
    users = torch.unique(train.data["music"].interactions.user)[:20]
    items = torch.zeros_like(users)
    before = fitted.predict("book", users, items)
    saved = fitted.profile_items_1.clone()
    try:  # move every music rating to one item: the book predictions change
        fitted.profile_items_1.zero_()
        assert not torch.allclose(fitted.predict("book", users, items), before)
    finally:
        fitted.profile_items_1.copy_(saved)
    assert torch.equal(fitted.predict("book", users, items), before)


def test_beats_the_item_mean_floor_on_the_sample(kfold_split, fitted):
    floor = build_model("ItemMean").fit(kfold_split.train, kfold_split.validation)
    conet = kfold_split.test.evaluate(fitted)
    item_mean = kfold_split.test.evaluate(floor)
    for metric in ("RMSE", "book/RMSE", "music/RMSE"):
        assert conet[metric] < item_mean[metric], (metric, conet[metric], item_mean[metric])


def test_bad_settings_and_inputs_are_refused(kfold_split, douban_sample):
    with pytest.raises(ValidationError, match="cross_layers"):
        CoNet(hidden=[16, 8], cross_layers=3)
    with pytest.raises(ValidationError, match="not_a_param"):
        CoNet(not_a_param=1)
    book = douban_sample["book"]
    three = CrossDomainData(douban_sample.user_ids, {
        "book": book, "music": douban_sample["music"], "more": book.with_interactions(
            book.interactions)}, name="three")
    split = KFoldRating(k=5).split(three, 0)
    with pytest.raises(ValueError, match="two domains"):
        CoNet(**QUICK).fit(split.train, split.validation, FitContext(progress=False))
    with pytest.raises(KeyError, match="fitted on"):
        model = CoNet(epochs=1).fit(kfold_split.train, None, FitContext(progress=False))
        model.predict("movie", torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))


def test_partner_loss_needs_ratings():
    from conftest import make_transfer_data

    from cdrec.scenarios.leave_one_out import LeaveOneOut

    split = LeaveOneOut(n_neg=9).split(make_transfer_data(n_users=60, n_items=30, per_user=8), 0)
    with pytest.raises(ValueError, match="partner_weight"):
        CoNet(partner_weight=1.0, epochs=1).fit(split.train, None, FitContext(progress=False))
