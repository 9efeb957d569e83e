"""Embedding bases ListRankMF, CML, GMF and DNN (MF and BPR where the interface is shared):
each loss against a hand computation on a tiny base, row masks, ``torch.func.vmap`` over tasks,
CML's unit ball, and ranking on data with a known structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.models import available_models, build_model
from cdrec.models.bases.registry import BASES, base_class
from cdrec.scenarios.leave_one_out import LeaveOneOut
from cdrec.train import FitContext

NEW = ["ListRankMF", "CML", "GMF", "DNN"]
ALL = ["MF", "BPR", *NEW]
IMPLICIT_ONLY = ["BPR", "ListRankMF"]
EXPLICIT_OK = ["MF", "GMF", "DNN", "CML"]  # CML on ratings: Metric Factorization
CASES = [(name, True) for name in ALL] + [(name, False) for name in EXPLICIT_OK]


def make_base(name: str, implicit: bool = True, n_users: int = 2, n_items: int = 3,
              dim: int = 2, global_mean: float = 3.0, **config):
    cls = base_class(name)
    return cls(n_users, n_items, cls.Config(dim=dim, **config), implicit=implicit,
               global_mean=0.0 if implicit else global_mean,
               generator=torch.Generator().manual_seed(0))


def set_rows(table: torch.nn.Embedding, rows: list[list[float]]) -> None:
    with torch.no_grad():
        table.weight.copy_(torch.tensor(rows))


def value(t: torch.Tensor) -> float:
    return float(t.detach())


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def random_batch(base, batch: int, n_neg: int, generator: torch.Generator, lead=()):
    """States, items, targets (negatives or ratings) and 0/1 weights for ``base``."""
    state = torch.randn(*lead, batch, base.user_dim, generator=generator) * 0.5
    items = torch.randint(base.n_items, (*lead, batch), generator=generator)
    if base.implicit:
        target = torch.randint(base.n_items, (*lead, batch, n_neg), generator=generator)
    else:
        target = torch.rand(*lead, batch, generator=generator) * 4 + 1
    weight = (torch.rand(*lead, batch, generator=generator) < 0.7).float()
    weight[..., 0] = 1.0  # never an all-zero task
    return state, items, target, weight


# --- registration and configuration --------------------------------------------------------

def test_registered_as_bases_and_recommenders():
    models = available_models()
    for name in NEW:
        assert name in BASES
        assert models[name].base_name == name
        assert models[name].Config is BASES[name].Config
        assert f"EMCDR_{name}" in models


def test_config_checks_and_defaults():
    assert build_model("CML").config.margin == 0.5
    assert build_model("CML").config.reg == 0.0  # the paper uses the unit ball, not L2
    assert build_model("CML", margin=0.2).config.margin == 0.2
    with pytest.raises(ValidationError, match="margin"):
        build_model("CML", margin=0)
    with pytest.raises(ValidationError, match="hidden"):
        build_model("DNN", hidden=[])
    with pytest.raises(ValidationError, match="margin"):
        build_model("GMF", margin=0.5)  # not a GMF setting
    assert build_model("DNN", dim=8).config.tower_sizes() == [8, 8, 8]
    assert build_model("DNN", dim=8, hidden=[16, 4]).config.tower_sizes() == [8, 16, 4]


@pytest.mark.parametrize("name", IMPLICIT_ONLY)
def test_ranking_bases_refuse_explicit_ratings(name, transfer_data):
    with pytest.raises(ValueError, match="implicit feedback"):
        make_base(name, implicit=False)
    from cdrec.scenarios.coldstart import ColdStartUsers

    split = ColdStartUsers("src", "tgt").split(transfer_data, 0)  # explicit ratings
    with pytest.raises(ValueError, match="implicit: true"):
        build_model(name, epochs=1).fit(split.train, context=FitContext(progress=False))


# --- the interface: shapes, user states, masks, vmap ---------------------------------------

@pytest.mark.parametrize(("name", "implicit"), CASES)
def test_score_with_layouts_agree(name, implicit):
    base = make_base(name, implicit, n_users=6, n_items=9, dim=4)
    gen = torch.Generator().manual_seed(1)
    users = torch.tensor([0, 3, 5])
    state = base.user_state(users)
    assert state.shape == (3, base.user_dim)
    items = torch.randint(9, (3, 5), generator=gen)
    grid = base.score_with(state.unsqueeze(1), items)
    assert grid.shape == (3, 5)
    for j in range(5):
        column = base.score_with(state, items[:, j])
        assert column.shape == (3,)
        assert torch.allclose(grid[:, j], column, atol=1e-6)
    assert torch.allclose(base(users, items[:, 0]), grid[:, 0], atol=1e-6)


@pytest.mark.parametrize(("name", "implicit"), CASES)
def test_weight_masks_rows(name, implicit):
    base = make_base(name, implicit, n_users=6, n_items=9, dim=4)
    gen = torch.Generator().manual_seed(2)
    state, items, target, _ = random_batch(base, 5, 3, gen)
    state.requires_grad_(True)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    masked = base.loss_with(state, items, target, weight)
    assert torch.allclose(masked, base.loss_with(state[:3], items[:3], target[:3]), atol=1e-6)
    # Whatever the masked rows hold, nothing changes, and they get no gradient.
    other_items, other_target = items.clone(), target.clone()
    other_items[3:] = (items[3:] + 1) % 9
    other_target[3:] = target[3:].flip(0) if implicit else target[3:] + 1
    assert torch.allclose(base.loss_with(state, other_items, other_target, weight), masked,
                          atol=1e-6)
    (grad,) = torch.autograd.grad(masked, state)
    assert float(grad[3:].abs().sum()) == 0.0 and float(grad[:3].abs().sum()) > 0
    # Weights are relative: doubling every weight leaves the weighted mean as it is.
    assert torch.allclose(base.loss_with(state, items, target, 2 * weight), masked, atol=1e-6)


@pytest.mark.parametrize(("name", "implicit"), CASES)
def test_loss_with_under_vmap_over_tasks(name, implicit):
    base = make_base(name, implicit, n_users=6, n_items=9, dim=4)
    gen = torch.Generator().manual_seed(3)
    state, items, target, weight = random_batch(base, 5, 3, gen, lead=(4,))
    looped = torch.stack([base.loss_with(state[t], items[t], target[t], weight[t])
                          for t in range(4)])
    mapped = torch.func.vmap(base.loss_with)(state, items, target, weight)
    assert mapped.shape == (4,)
    assert torch.allclose(mapped, looped, atol=1e-6)
    # Gradients per task through vmap (what a meta-learner takes) match autograd's.
    grads = torch.func.vmap(torch.func.grad(base.loss_with))(state, items, target, weight)
    for t in range(4):
        s = state[t].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(base.loss_with(s, items[t], target[t], weight[t]), s)
        assert torch.allclose(grads[t], expected, atol=1e-6)


@pytest.mark.parametrize(("name", "implicit"), CASES)
def test_reset_users_puts_them_at_the_zero_state(name, implicit):
    base = make_base(name, implicit, n_users=6, n_items=9, dim=4)
    base.reset_users(torch.tensor([1, 4]))
    assert float(base.user_state(torch.tensor([1, 4])).detach().abs().sum()) == 0.0
    assert float(base.user_state(torch.tensor([0, 2])).detach().abs().sum()) > 0.0


@pytest.mark.parametrize(("name", "implicit"), CASES)
def test_training_loss_is_loss_plus_weighted_penalty(name, implicit):
    base = make_base(name, implicit, n_users=6, n_items=9, dim=4, reg=0.3)
    gen = torch.Generator().manual_seed(4)
    _, items, target, _ = random_batch(base, 5, 3, gen)
    users = torch.tensor([0, 1, 2, 3, 5])
    expected = (base.loss_with(base.user_state(users), items, target)
                + 0.3 * base.penalty(users, items, target))
    assert torch.allclose(base.training_loss(users, items, target), expected)


# --- each base's equations, by hand ----------------------------------------------------------

USERS = torch.tensor([0, 1])
POS = torch.tensor([0, 1])
NEG = torch.tensor([[1, 2], [0, 2]])


def mf_tables(base) -> None:
    """p_0 = (1, 0), p_1 = (0.5, -1); q_0 = (2, 0), q_1 = (0, 1), q_2 = (-1, 0.5)."""
    set_rows(base.user_factors, [[1.0, 0.0], [0.5, -1.0]])
    set_rows(base.item_factors, [[2.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])


# p.q for (user, item): u0: q0 2, q1 0, q2 -1; u1: q0 1, q1 -1, q2 -1.
DOT = {(0, 0): 2.0, (0, 1): 0.0, (0, 2): -1.0, (1, 0): 1.0, (1, 1): -1.0, (1, 2): -1.0}


def listwise_xent(scores: list[float], true: list[float]) -> float:
    """Cross-entropy between the top-one (exp-softmax) distributions of true and predicted."""
    z_true = sum(math.exp(t) for t in true)
    z_pred = sum(math.exp(s) for s in scores)
    return -sum(math.exp(t) / z_true * math.log(math.exp(s) / z_pred)
                for t, s in zip(true, scores, strict=True))


@pytest.mark.parametrize("one_hot", [False, True])
def test_listrank_loss_by_hand(one_hot):
    base = make_base("ListRankMF", one_hot_target=one_hot)
    mf_tables(base)
    # Lists: user 0 [item 0 | 1, 2], user 1 [item 1 | 0, 2]; g is the logistic function.
    g0 = [sigmoid(DOT[0, 0]), sigmoid(DOT[0, 1]), sigmoid(DOT[0, 2])]
    g1 = [sigmoid(DOT[1, 1]), sigmoid(DOT[1, 0]), sigmoid(DOT[1, 2])]
    if one_hot:
        rows = [-math.log(math.exp(g[0]) / sum(math.exp(x) for x in g)) for g in (g0, g1)]
    else:
        rows = [listwise_xent(g, [1.0, 0.0, 0.0]) for g in (g0, g1)]
    loss = base.loss_with(base.user_state(USERS), POS, NEG)
    assert value(loss) == pytest.approx(sum(rows) / 2, rel=1e-6)
    assert torch.allclose(base.score_with(base.user_state(USERS), POS),
                          torch.tensor([sigmoid(2.0), sigmoid(-1.0)]))
    masked = base.loss_with(base.user_state(USERS), POS, NEG, torch.tensor([0.0, 1.0]))
    assert value(masked) == pytest.approx(rows[1], rel=1e-6)
    # Penalty: squared rows of users, positives and negatives / sqrt(n_neg), per batch row.
    expected = (1 + 1.25) + (4 + 1) + ((1 + 1.25) + (4 + 1.25)) / 2
    assert value(base.penalty(USERS, POS, NEG)) == pytest.approx(expected / 2)


@pytest.mark.parametrize("rank_weight", [True, False])
def test_cml_loss_by_hand(rank_weight):
    base = make_base("CML", margin=0.5, rank_weight=rank_weight)
    set_rows(base.user_factors, [[0.6, 0.0], [0.3, -0.4]])
    set_rows(base.item_factors, [[0.8, 0.0], [0.0, 0.6], [-0.5, 0.5]])
    # Squared distances: u0: q0 0.04, q1 0.72, q2 1.46;  u1: q0 0.41, q1 1.09, q2 1.45.
    state = base.user_state(USERS)
    assert torch.allclose(base.score_with(state.unsqueeze(1), torch.tensor([[0, 1, 2]] * 2)),
                          -torch.tensor([[0.04, 0.72, 1.46], [0.41, 1.09, 1.45]]), atol=1e-6)
    pos, neg = torch.tensor([1, 2]), torch.tensor([[0, 2], [0, 1]])
    # Row 0 (u0, j=1 | 0, 2): [0.5 + 0.72 - 0.04]_+ = 1.18, [0.5 + 0.72 - 1.46]_+ = 0: M = 1,
    #   rank = floor(J M / U) = floor(3 * 1 / 2) = 1, w = log 2.
    # Row 1 (u1, j=2 | 0, 1): 0.5 + 1.45 - 0.41 = 1.54, 0.5 + 1.45 - 1.09 = 0.86: M = 2,
    #   rank = floor(3 * 2 / 2) = 3, w = log 4.
    w0, w1 = (math.log(2), math.log(4)) if rank_weight else (1.0, 1.0)
    expected = (w0 * 1.18 + w1 * (1.54 + 0.86)) / 2
    assert value(base.loss_with(state, pos, neg)) == pytest.approx(expected, rel=1e-5)
    # No impostor, no loss: u0 with j = 0 has both negatives beyond the margin.
    assert value(base.loss_with(state[:1], torch.tensor([0]), torch.tensor([[1, 2]]))) == 0.0


def norms(table: torch.nn.Embedding) -> torch.Tensor:
    return table.weight.detach().norm(dim=1)


def test_cml_projects_onto_the_unit_ball():
    base = make_base("CML", n_users=50, n_items=40, dim=8)
    assert bool((norms(base.user_factors) <= 1 + 1e-6).all())  # from the start
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        base.user_factors.weight.copy_(torch.randn(50, 8, generator=gen))
        base.item_factors.weight.copy_(torch.randn(40, 8, generator=gen) * 0.2)
    before_u = base.user_factors.weight.detach().clone()
    before_i = base.item_factors.weight.detach().clone()
    assert bool((before_u.norm(dim=1) > 1).any())
    base.after_step()
    for table, before in ((base.user_factors, before_u), (base.item_factors, before_i)):
        after = table.weight.detach()
        assert bool((norms(table) <= 1 + 1e-6).all())
        inside = before.norm(dim=1) <= 1
        assert torch.equal(after[inside], before[inside])  # already feasible: untouched
        outside = ~inside
        assert torch.allclose(after[outside], before[outside]
                              / before[outside].norm(dim=1, keepdim=True))


def test_cml_trained_sparsely_projects_the_rows_of_the_step_only():
    """After a sparse step only the batch's rows moved: they are projected, and no other row
    is written (a row outside the ball that the step did not touch stays as it was)."""
    from cdrec.nn.sparse import LazyAdam

    base = make_base("CML", n_users=6, n_items=5, dim=3, sparse=True)
    with torch.no_grad():
        base.user_factors.weight[5] = torch.tensor([3.0, 0.0, 0.0])  # outside, not in the batch
    optimizer = LazyAdam([base.user_factors.weight, base.item_factors.weight], lr=5.0)
    users, items = torch.tensor([0, 1]), torch.tensor([2, 3])
    negatives = torch.tensor([[0], [4]])
    before = base.user_factors.weight.detach().clone()
    base.training_loss(users, items, negatives).backward()
    assert base.user_factors.weight.grad is not None and base.user_factors.weight.grad.is_sparse
    optimizer.step()
    moved = base.user_factors.weight.detach().clone()
    assert bool((moved[:2].norm(dim=1) > 1).any())  # lr 5: the step left the ball
    base.after_step()
    after = base.user_factors.weight.detach()
    assert bool((after[:2].norm(dim=1) <= 1 + 1e-6).all())
    assert torch.equal(after[2:], before[2:])  # untouched rows not written
    assert bool((norms(base.item_factors)[[0, 2, 3, 4]] <= 1 + 1e-6).all())


def test_gmf_loss_by_hand():
    base = make_base("GMF")
    mf_tables(base)
    with torch.no_grad():
        base.h.copy_(torch.tensor([2.0, 0.5]))
    # h^T (p * q): u0: q0 2*1*2 = 4, q1 0, q2 2*1*(-1) = -2; u1: q0 2*0.5*2 = 2,
    #   q1 0.5*(-1)*1 = -0.5, q2 2*0.5*(-1) + 0.5*(-1)*0.5 = -1.25.
    state = base.user_state(USERS)
    assert torch.allclose(base.score_with(state, POS), torch.tensor([4.0, -0.5]))
    row0 = softplus(-4.0) + softplus(0.0) + softplus(-2.0)
    row1 = softplus(0.5) + softplus(2.0) + softplus(-1.25)
    assert value(base.loss_with(state, POS, NEG)) == pytest.approx((row0 + row1) / 2, rel=1e-6)

    explicit = make_base("GMF", implicit=False, global_mean=3.0)
    mf_tables(explicit)
    with torch.no_grad():
        explicit.h.copy_(torch.tensor([2.0, 0.5]))
        explicit.item_bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    # r_hat = mu + b_i + h^T (p * q): u0, i0: 3 + 0.1 + 4 = 7.1; u1, i2: 3 + 0.3 - 1.25 = 2.05.
    items, ratings = torch.tensor([0, 2]), torch.tensor([5.0, 3.0])
    state = explicit.user_state(USERS)
    assert torch.allclose(explicit.score_with(state, items), torch.tensor([7.1, 2.05]))
    expected = ((7.1 - 5.0) ** 2 + (2.05 - 3.0) ** 2) / 2
    assert value(explicit.loss_with(state, items, ratings)) == pytest.approx(expected, rel=1e-6)
    # Penalty on ratings: user rows, item rows, h (once per batch) and item biases, per batch row.
    penalty = (1 + 1.25) + (4 + 1.25) + (4 + 0.25) + (0.01 + 0.09)
    assert value(explicit.penalty(USERS, items, ratings)) == pytest.approx(penalty / 2)


def set_towers(base) -> None:
    """User tower: identity, ReLU, identity (so f_U(p) = relu(p)); item tower: identity, ReLU,
    2 * identity + (0.1, 0) (so f_I(q) = 2 relu(q) + (0.1, 0))."""
    eye = torch.eye(2)
    with torch.no_grad():
        for layer, w in zip([base.user_tower[0], base.user_tower[2]], [eye, eye], strict=True):
            layer.weight.copy_(w)
            layer.bias.zero_()
        base.item_tower[0].weight.copy_(eye)
        base.item_tower[0].bias.zero_()
        base.item_tower[2].weight.copy_(2 * eye)
        base.item_tower[2].bias.copy_(torch.tensor([0.1, 0.0]))


def test_dnn_loss_by_hand():
    base = make_base("DNN")
    mf_tables(base)
    set_towers(base)
    # f_U: u0 (1, 0), u1 (0.5, 0); f_I: q0 (4.1, 0), q1 (0.1, 2), q2 (0.1, 1).
    # <f_U, f_I>: u0: 4.1, 0.1, 0.1; u1: 2.05, 0.05, 0.05.
    state = base.user_state(USERS)
    assert torch.allclose(state, base.user_factors.weight)  # the embedding, before the tower
    assert torch.allclose(base.score_with(state, POS), torch.tensor([4.1, 0.05]))
    row0 = softplus(-4.1) + softplus(0.1) + softplus(0.1)
    row1 = softplus(-0.05) + softplus(2.05) + softplus(0.05)
    assert value(base.loss_with(state, POS, NEG)) == pytest.approx((row0 + row1) / 2, rel=1e-6)

    explicit = make_base("DNN", implicit=False, global_mean=3.0)
    mf_tables(explicit)
    set_towers(explicit)
    with torch.no_grad():
        explicit.item_bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    # r_hat = mu + b_i + <f_U, f_I>: u0, i1: 3 - 0.2 + 0.1 = 2.9; u1, i0: 3 + 0.1 + 2.05 = 5.15.
    items, ratings = torch.tensor([1, 0]), torch.tensor([4.0, 5.0])
    state = explicit.user_state(USERS)
    assert torch.allclose(explicit.score_with(state, items), torch.tensor([2.9, 5.15]))
    expected = ((2.9 - 4.0) ** 2 + (5.15 - 5.0) ** 2) / 2
    assert value(explicit.loss_with(state, items, ratings)) == pytest.approx(expected, rel=1e-6)


def test_dnn_state_after_the_user_tower():
    base = make_base("DNN", n_users=6, n_items=9, dim=4, hidden=[8, 3], state_after_tower=True)
    assert base.user_dim == 3
    users, items = torch.tensor([0, 2, 5]), torch.tensor([1, 1, 7])
    p = base.user_factors(users)
    state = base.user_state(users)
    assert torch.allclose(state, base.user_tower(p))
    expected = (state * base.item_tower(base.item_factors(items))).sum(-1)
    assert torch.allclose(base.score_with(state, items), expected)
    base.reset_users(users)  # the embedding is zeroed; the state is the tower's output at 0
    assert torch.allclose(base.user_state(users), base.user_tower(torch.zeros(3, 4)))
    assert make_base("DNN", dim=4, hidden=[8, 3]).user_dim == 4


def test_same_generator_same_base():
    a = make_base("DNN", n_users=5, n_items=7, dim=4)
    b = make_base("DNN", n_users=5, n_items=7, dim=4)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


# --- training: structure is found, real data runs ---------------------------------------------

def cluster_data(n_users: int = 300, n_items: int = 200, n_clusters: int = 5,
                 per_user: int = 12, seed: int = 0) -> CrossDomainData:
    """One implicit domain where user u (cluster u mod 5) only takes items of block u mod 5 (40
    items each), at random: item popularity is flat, so only personalisation ranks well."""
    rng = np.random.default_rng(seed)
    size = n_items // n_clusters
    cluster = np.arange(n_users) % n_clusters
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([cluster[u] * size + rng.choice(size, per_user, replace=False)
                            for u in range(n_users)])
    inter = Interactions(torch.from_numpy(users), torch.from_numpy(items),
                         torch.ones(len(users)))
    return CrossDomainData(np.arange(n_users), {"d": Domain("d", np.arange(n_items), inter)},
                           name="clusters")


@pytest.fixture(scope="module")
def cluster_split():
    return LeaveOneOut().split(cluster_data(), 0)


@pytest.fixture(scope="module")
def popularity_on_clusters(cluster_split):
    model = build_model("Popularity").fit(cluster_split.train, cluster_split.validation)
    return cluster_split.test.evaluate(model)


@pytest.mark.parametrize("name", NEW)
def test_each_base_finds_the_clusters(name, cluster_split, popularity_on_clusters):
    model = build_model(name, dim=16, epochs=30, batch_size=256, lr=0.01).fit(
        cluster_split.train, cluster_split.validation, FitContext(progress=False))
    got, pop = cluster_split.test.evaluate(model), popularity_on_clusters
    # Random ranking of 1 + 99 gives HR@10 ~ 0.1; the clusters leave ~20 rivals, HR@10 ~ 0.5.
    assert got["HR@10"] > pop["HR@10"] + 0.25, (got, pop)
    assert got["NDCG@10"] > 2 * pop["NDCG@10"], (got, pop)
    if name == "CML":
        base = model.models["d"]
        for table in (base.user_factors, base.item_factors):
            assert bool((table.weight.detach().norm(dim=1) <= 1 + 1e-5).all())


@pytest.fixture(scope="module")
def amazon_split():
    from cdrec.data.catalog import sample_path
    from cdrec.data.readers import read_amazon_implicit_pair

    data = read_amazon_implicit_pair(sample_path("amazon_implicit"), "phone", "electronic")
    return LeaveOneOut().split(data, 0)


@pytest.mark.parametrize("name", NEW)
def test_each_base_runs_on_the_amazon_sample(name, amazon_split):
    ctx = FitContext(progress=False)
    model = build_model(name, epochs=2, dim=8).fit(amazon_split.train, amazon_split.validation,
                                                   ctx)
    assert [s.stage for s in ctx.stages] == ["base_phone", "base_electronic"]
    metrics = amazon_split.test.evaluate(model)
    assert {"NDCG@10", "HR@10", "phone/NDCG@10", "electronic/HR@10"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0.0 < metrics["HR@10"] <= 1.0


def test_base_cache_reuses_pretrained_bases_exactly(transfer_data):
    from cdrec.models import build_model
    from cdrec.models.bases.cache import BaseCache
    from cdrec.scenarios.coldstart import ColdStartUsers
    from cdrec.train import FitContext, seed_everything

    split = ColdStartUsers("src", "tgt", test_fraction=0.2, validation_fraction=0.1).split(
        transfer_data, 0)
    base_config = {"epochs": 6, "batch_size": 2048}
    users, items = split.test.users[:50], torch.arange(50) % transfer_data["tgt"].n_items

    def fitted(name, cache, **params):
        seed_everything(0)
        context = FitContext(seed=0, progress=False, base_cache=cache)
        model = build_model(name, base_config=base_config, **params)
        model.fit(split.train, split.validation, context)
        return model.predict("tgt", users, items), context

    cache = BaseCache()
    first, _ = fitted("EMCDR", cache, epochs=5)
    assert (cache.hits, cache.misses) == (0, 2)
    reused, context = fitted("TMCDR_MF", cache, epochs=3)
    assert (cache.hits, cache.misses) == (2, 2)          # source and target bases reused
    trained, plain = fitted("TMCDR_MF", None, epochs=3)
    assert torch.equal(reused, trained)                  # exact: same numbers as training them
    assert [s.stage for s in context.stages] == [s.stage for s in plain.stages]
    assert [s.best_epoch for s in context.stages] == [s.best_epoch for s in plain.stages]
    assert not torch.equal(first, reused)
    # Other settings of the base are a different base: no hit.
    seed_everything(0)
    build_model("EMCDR", base_config={**base_config, "dim": 8}, epochs=2).fit(
        split.train, split.validation, FitContext(seed=0, progress=False, base_cache=cache))
    assert (cache.hits, cache.misses) == (2, 4)
