"""CML on explicit ratings (Metric Factorization, ``cdrec.models.bases.cml``): the prediction
max_rating - (||u - v_i||^2 + b_u + b_i + offset) by hand, gradients into points and biases, the
ball of radius 1/2 around the points only, a fit beating ItemMean on the Douban sample; and the
implicit mode exactly as it was before ratings existed."""

from __future__ import annotations

import pytest
import torch

from cdrec.data.catalog import load_sample
from cdrec.models import available_models, build_model
from cdrec.models.bases.registry import base_class
from cdrec.models.registry import LABELLED_SCENARIOS
from cdrec.nn.sparse import LazyAdam
from cdrec.scenarios.kfold_rating import KFoldRating
from cdrec.train import FitContext, seed_everything

MAX_RATING, MU = 5.0, 3.5
OFFSET = MAX_RATING - MU  # c = r_max - mu, the global offset of the predicted distance
# Points (dim 2) and biases: user rows [u, b_u], item rows [v_i, b_i].
USER_ROWS = [[0.3, 0.0, 0.2], [0.0, -0.4, -0.1]]
ITEM_ROWS = [[0.0, 0.4, 0.5], [-0.3, 0.0, 0.0], [0.1, 0.1, -0.3]]


def rating_base(sparse: bool = False, **config):
    cls = base_class("CML")
    return cls(2, 3, cls.Config(dim=2, sparse=sparse, **config), implicit=False,
               global_mean=MU, generator=torch.Generator().manual_seed(0))


def hand_base(**config):
    base = rating_base(**config)
    with torch.no_grad():
        base.user_factors.weight.copy_(torch.tensor(USER_ROWS))
        base.item_factors.weight.copy_(torch.tensor(ITEM_ROWS))
    return base


def by_hand(u: int, i: int) -> float:
    """max_rating - (||u - v_i||^2 + b_u + b_i + offset), in plain Python."""
    (u1, u2, bu), (v1, v2, bi) = USER_ROWS[u], ITEM_ROWS[i]
    distance = (u1 - v1) ** 2 + (u2 - v2) ** 2 + bu + bi + OFFSET
    return MAX_RATING - distance


def test_cml_supports_rating_prediction():
    assert "kfold_rating" in available_models()["CML"].supports
    assert available_models()["CML"].supports == LABELLED_SCENARIOS
    base = rating_base()
    assert base.user_dim == 3 and base.item_factors.embedding_dim == 3  # [point, bias]
    assert base.radius == 0.5 and base.config.radius is None
    assert rating_base(radius=0.8).radius == 0.8
    implicit = base_class("CML")(2, 3, base.config, implicit=True)
    assert implicit.radius == 1.0 and implicit.user_dim == 2


def test_cml_predicted_ratings_by_hand():
    base = hand_base()
    expected = torch.tensor([[by_hand(u, i) for i in range(3)] for u in range(2)])
    # E.g. u0, v0: ||(0.3, -0.4)||^2 = 0.25, + 0.2 + 0.5 + 1.5 = 2.45: rating 2.55.
    assert expected[0, 0].item() == pytest.approx(2.55)
    users = torch.tensor([0, 0, 0, 1, 1, 1])
    items = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(base(users, items), expected.flatten(), atol=1e-6)
    state = base.user_state(torch.tensor([0, 1]))
    assert torch.allclose(state, torch.tensor(USER_ROWS))  # the state carries b_u
    assert torch.allclose(base.score_items(state, torch.arange(3)), expected, atol=1e-6)
    assert torch.allclose(base.score_with(state.unsqueeze(1), torch.arange(3).expand(2, 3)),
                          expected, atol=1e-6)
    # Loss: the squared error between the predicted distance and r_max - r.
    ratings = torch.tensor([4.0, 2.0])
    pairs = [(0, 0), (1, 2)]
    loss = sum(((MAX_RATING - by_hand(u, i)) - (MAX_RATING - r)) ** 2
               for (u, i), r in zip(pairs, ratings.tolist(), strict=True)) / 2
    got = base.loss_with(state, torch.tensor([0, 2]), ratings)
    assert got.item() == pytest.approx(loss, rel=1e-6)
    # A user at the prior (reset): mu - ||v_i||^2 - b_i.
    base.reset_users(torch.tensor([1]))
    prior = [MU - (v1 ** 2 + v2 ** 2) - bi for v1, v2, bi in ITEM_ROWS]
    assert torch.allclose(base(torch.tensor([1, 1, 1]), torch.arange(3)),
                          torch.tensor(prior), atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_cml_gradient_reaches_points_and_biases(sparse):
    base = hand_base(sparse=sparse)
    users, items = torch.tensor([0, 1]), torch.tensor([0, 2])
    base.training_loss(users, items, torch.tensor([4.0, 2.0])).backward()
    for table, rows in ((base.user_factors, users), (base.item_factors, items)):
        grad = table.weight.grad
        assert grad is not None and grad.is_sparse == sparse
        grad = grad.to_dense()
        assert bool((grad[rows, :2].abs().sum(1) > 0).all())  # the points
        assert bool((grad[rows, 2] != 0).all())  # the biases
    # d loss / d b_u = d loss / d b_i = d loss / d d_hat = 2 (d_hat - (r_max - r)) / B
    # = 2 (r - r_hat) / B, with B = 2 rows.
    expected = torch.tensor([4.0 - by_hand(0, 0), 2.0 - by_hand(1, 2)])
    assert torch.allclose(base.user_factors.weight.grad.to_dense()[users, 2], expected)
    assert torch.allclose(base.item_factors.weight.grad.to_dense()[items, 2], expected)
    # A step moves the biases; the projection keeps the points in the ball of radius 1/2 and
    # leaves the biases as the step left them.
    params = [base.user_factors.weight, base.item_factors.weight]
    optimizer = LazyAdam(params, lr=2.0) if sparse else torch.optim.Adam(params, lr=2.0)
    optimizer.step()
    stepped = base.user_factors.weight.detach().clone()
    assert not torch.allclose(stepped[:, 2], torch.tensor(USER_ROWS)[:, 2])
    assert bool((stepped[:, :2].norm(dim=1) > 0.5).any())  # lr 2: the step left the ball
    base.after_step()
    after = base.user_factors.weight.detach()
    assert bool((after[:, :2].norm(dim=1) <= 0.5 + 1e-6).all())
    assert torch.equal(after[:, 2], stepped[:, 2])


def test_cml_constrain_state_projects_the_point_only():
    base = rating_base()
    state = torch.tensor([[3.0, 4.0, 7.0], [0.1, 0.0, -2.0]])
    assert torch.allclose(base.constrain_state(state),
                          torch.tensor([[0.3, 0.4, 7.0], [0.1, 0.0, -2.0]]))
    assert bool((base.user_factors.weight[:, :2].norm(dim=1) <= 0.5 + 1e-6).all())  # from init


def test_cml_implicit_mode_is_unchanged():
    """Three steps of implicit CML, sparse and dense, give the scores of the implementation
    before the ratings mode (values recorded from it), with the same parameters."""
    cls = base_class("CML")
    users = torch.tensor([0, 1, 2, 3, 4])
    negatives = torch.tensor([[5, 1], [2, 3], [4, 0], [1, 5], [3, 2]])
    recorded = {0: [-0.059089, -1.020544, -1.621448, -0.203778, -0.99683, -1.297914],
                3: [-0.40157, -0.847609, -0.944572, -0.007313, -0.543736, -1.173722],
                6: [-0.538653, -0.882496, -1.159744, -0.057397, -0.31268, -1.234497]}
    for sparse in (True, False):
        base = cls(7, 6, cls.Config(dim=3, sparse=sparse), implicit=True,
                   generator=torch.Generator().manual_seed(0))
        assert sorted(base.state_dict()) == ["item_factors.weight", "user_factors.weight"]
        assert base.user_dim == 3 and base.item_factors.embedding_dim == 3
        params = [base.user_factors.weight, base.item_factors.weight]
        optimizer = LazyAdam(params, lr=0.3) if sparse else torch.optim.Adam(params, lr=0.3)
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            base.training_loss(users, users, negatives).backward()
            optimizer.step()
            base.after_step()
        scores = base.score_items(base.user_state(torch.arange(7)), torch.arange(6)).detach()
        for user, row in recorded.items():
            assert torch.allclose(scores[user], torch.tensor(row), atol=2e-6), (sparse, user)


@pytest.fixture(scope="module")
def douban_fold0():
    """Fold 0 of configs/kfold_douban_sample.yaml (its scenario settings)."""
    scenario = KFoldRating(k=5, relevance_threshold=4.0, top_k=5, validation_fraction=0.1)
    return scenario.split(load_sample("douban"), 0)


def test_cml_beats_item_mean_on_the_douban_sample(douban_fold0):
    def fitted(name):
        seed_everything(0)
        return build_model(name).fit(douban_fold0.train, douban_fold0.validation,
                                     FitContext(seed=0, progress=False))

    cml, floor = (douban_fold0.test.evaluate(fitted(name)) for name in ("CML", "ItemMean"))
    # Measured: CML 0.8441 / 0.6709, ItemMean 0.8665 / 0.6903 (RMSE / MAE).
    assert cml["RMSE"] < floor["RMSE"] - 0.01, (cml, floor)
    assert cml["MAE"] < floor["MAE"], (cml, floor)
    for domain in ("book", "music"):
        assert cml[f"{domain}/RMSE"] < floor[f"{domain}/RMSE"], (domain, cml, floor)
