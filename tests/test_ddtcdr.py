"""DDTCDR: its dual-transfer term is live (the authors' code detaches it), X stays orthogonal,
and it beats the ItemMean floor on the shipped sample."""

from __future__ import annotations

import torch
from conftest import make_transfer_data

from cdrec.models import build_model
from cdrec.scenarios import KFoldRating
from cdrec.train import FitContext, seed_everything


def _fit(split, **params):
    seed_everything(0)
    model = build_model("DDTCDR", **{"epochs": 2, "batch_size": 256,
                                     "autoencoder": {"epochs": 2}, **params})
    return model.fit(split.train, split.validation, FitContext(progress=False))


def test_the_dual_term_reaches_the_other_recommender_and_x():
    split = KFoldRating(k=5).split(make_transfer_data(n_users=120, n_items=30, per_user=10), 0)
    model = _fit(split)
    model.train()
    a, b = model.domains_
    # Domain-a ratings only: the in-domain term trains RS_a; only the dual term reaches RS_b
    # (through RS_b(X W_ua, W_ia)) and X.
    batch = [torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]),
             torch.tensor([0.2, 0.9, 0.5])]
    model.zero_grad()
    model._in_domain_loss(batch).backward()
    assert float(model.recommenders[a].mlp[-1].weight.grad.abs().sum()) > 0
    assert model.recommenders[b].mlp[-1].weight.grad is None
    assert model.maps[0].weight.grad is None
    model.zero_grad()
    model._cross_loss(batch).backward()
    assert float(model.recommenders[b].mlp[-1].weight.grad.abs().sum()) > 0
    assert float(model.maps[0].weight.grad.abs().sum()) > 0
    assert model.maps[0].orthogonality_error() < 1e-5
    # Training moved X off the identity (it is trained, not just initialised).
    assert not torch.allclose(model.maps[0].weight.detach(), torch.eye(16))


def test_ddtcdr_beats_the_item_mean_floor_on_the_sample(douban_sample):
    split = KFoldRating(k=5).split(douban_sample, 0)
    floor = build_model("ItemMean").fit(split.train)
    model = _fit(split, epochs=3, features="ids")
    ours, item_mean = split.test.evaluate(model), split.test.evaluate(floor)
    for domain in ("book", "music"):
        assert ours[f"{domain}/RMSE"] < item_mean[f"{domain}/RMSE"]
