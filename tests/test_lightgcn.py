"""LightGCN (He et al., SIGIR 2020): the propagation against a dense D^-1/2 A D^-1/2 reference,
isolated nodes, gradients through the graph, the loss of Eq. 15, the cache of propagated
embeddings, the graph through fitting, saving, loading and ``BaseCache``, bad settings, and
ranking on data with structure and on the shipped sample."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from test_bases import cluster_data  # one implicit domain of 5 user clusters

from cdrec.data.dataset import Interactions
from cdrec.models import available_models, build_model
from cdrec.models.bases.lightgcn import LightGCNBase, LightGCNConfig
from cdrec.models.bases.registry import BASES
from cdrec.scenarios.leave_one_out import LeaveOneOut
from cdrec.train import FitContext, seed_everything


def make_base(n_users: int, n_items: int, dim: int = 4, **config) -> LightGCNBase:
    return LightGCNBase(n_users, n_items, LightGCNConfig(dim=dim, **config), implicit=True,
                        generator=torch.Generator().manual_seed(0))


def interactions(pairs: list[tuple[int, int]]) -> Interactions:
    users, items = zip(*pairs, strict=True)
    return Interactions(torch.tensor(users), torch.tensor(items), torch.ones(len(pairs)))


def count_propagations(base: LightGCNBase) -> list[int]:
    """Wrap ``base.propagate`` so each full-graph propagation is counted."""
    calls = [0]
    inner = base.propagate

    def counted():
        calls[0] += 1
        return inner()

    base.propagate = counted  # type: ignore[method-assign]
    return calls


# --- registration and settings ---------------------------------------------------------------

def test_registered_with_the_authors_defaults():
    assert BASES["LightGCN"] is LightGCNBase
    models = available_models()
    assert models["LightGCN"].base_name == "LightGCN"
    assert models["LightGCN"].Config is LightGCNConfig
    assert models["LightGCN"].supports == {"coldstart", "leave_one_out"}  # implicit only
    assert {"EMCDR_LightGCN", "TMCDR_LightGCN", "PTUPCDR_LightGCN"} <= set(models)
    cfg = build_model("LightGCN").config
    assert (cfg.dim, cfg.n_layers, cfg.lr, cfg.batch_size, cfg.reg, cfg.n_neg, cfg.epochs) == (
        64, 3, 1e-3, 2048, 1e-4, 1, 1000)
    assert cfg.sparse is False


# --- the graph and its propagation ------------------------------------------------------------

# 3 users x 4 items; (0, 0) repeated: R is binary, the repeat is one edge.
PAIRS = [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3), (2, 1), (0, 0)]


def dense_reference(pairs, n_users, n_items, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """E = 1/(K+1) sum_k (D^-1/2 A D^-1/2)^k E^(0) with dense float64 matrices."""
    n = n_users + n_items
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in pairs:
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    degree = a.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    norm = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    layer, total = ego, ego.clone()
    for _ in range(n_layers):
        layer = norm @ layer
        total = total + layer
    return total / (n_layers + 1)


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_propagation_matches_a_dense_reference(n_layers):
    base = make_base(3, 4, dim=5, n_layers=n_layers).double()
    base.set_graph(interactions(PAIRS))
    adjacency = base.adjacency
    assert adjacency is not None and adjacency.layout == torch.sparse_csr
    assert adjacency.shape == (7, 7) and adjacency._nnz() == 12  # 6 distinct edges, both ways
    dense = adjacency.to_dense()
    # Degrees: u0 2, u1 3, u2 1; i0 1, i1 3, i2 1, i3 1 (the repeated pair counted once).
    assert dense[0, 3 + 1].item() == pytest.approx(1 / math.sqrt(2 * 3))
    assert dense[3 + 0, 0].item() == pytest.approx(1 / math.sqrt(1 * 2))
    assert dense[1, 3 + 3].item() == pytest.approx(1 / math.sqrt(3 * 1))
    assert torch.equal(dense, dense.T) and float(dense.diagonal().abs().sum()) == 0.0

    ego = torch.cat([base.user_factors.weight, base.item_factors.weight]).detach()
    expected = dense_reference(PAIRS, 3, 4, ego, n_layers)
    users, items = base.propagate()
    assert users.dtype == torch.float64
    torch.testing.assert_close(torch.cat([users, items]), expected, atol=1e-10, rtol=0)
    # Every scoring path reads the propagated embeddings (Eq. 5: e_u^T e_i).
    with torch.no_grad():
        state = base.user_state(torch.tensor([0, 2]))
        torch.testing.assert_close(state, expected[[0, 2]])
        scores = base.score_items(state, torch.arange(4))
        torch.testing.assert_close(scores, expected[[0, 2]] @ expected[3:].T)
        torch.testing.assert_close(base(torch.tensor([0, 2]), torch.tensor([3, 1])),
                                   (expected[[0, 2]] * expected[[3 + 3, 3 + 1]]).sum(-1))


def test_float32_propagation_agrees_with_the_reference():
    base = make_base(3, 4, dim=5)
    base.set_graph(interactions(PAIRS))
    ego = torch.cat([base.user_factors.weight, base.item_factors.weight]).detach().double()
    users, items = base.propagate()
    torch.testing.assert_close(torch.cat([users, items]).double(),
                               dense_reference(PAIRS, 3, 4, ego, 3), atol=1e-6, rtol=0)


def test_isolated_nodes_give_no_nan_and_reset_users_give_the_prior():
    # User 3 and item 4 have no interaction: degree 0.
    base = make_base(4, 5, dim=3)
    base.set_graph(interactions(PAIRS))
    users, items = base.propagate()
    assert bool(torch.isfinite(users).all() and torch.isfinite(items).all())
    # With no edge, the combined embedding is the ego row / (K + 1).
    torch.testing.assert_close(users[3], base.user_factors.weight[3] / 4)
    torch.testing.assert_close(items[4], base.item_factors.weight[4] / 4)
    loss = base.training_loss(torch.tensor([3, 0]), torch.tensor([4, 1]),
                              torch.tensor([[2], [4]]))
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert bool(torch.isfinite(base.user_factors.weight.grad).all())
    assert bool(torch.isfinite(base.item_factors.weight.grad).all())
    # A user without data reset to the prior scores 0 for every item.
    base.eval()
    base.reset_users(torch.tensor([3]))
    with torch.no_grad():
        assert float(base.user_state(torch.tensor([3])).abs().sum()) == 0.0
        assert float(base.score_items(base.user_state(torch.tensor([3])),
                                      torch.arange(5)).abs().sum()) == 0.0
        assert float(base.user_state(torch.tensor([0])).abs().sum()) > 0.0


# A chain u0 - i0 - u1 - i1 - u2 - i2, and item i3 without edges.
CHAIN = [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]
# Distance of each node from the batch (u0, positive i0, negative i3), by name.
HOPS = {"u0": 0, "i0": 0, "i3": 0, "u1": 1, "i1": 2, "u2": 3, "i2": 4}


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_the_bpr_gradient_reaches_ego_rows_within_k_hops(n_layers):
    """Propagation is what LightGCN adds over MF: a batch's loss moves the ego embeddings of
    every node within K hops of its nodes (i1 is 2 hops from i0), and no further."""
    base = make_base(3, 4, n_layers=n_layers)
    base.set_graph(interactions(CHAIN))
    base.training_loss(torch.tensor([0]), torch.tensor([0]), torch.tensor([[3]])).backward()
    grads = {f"u{u}": base.user_factors.weight.grad[u] for u in range(3)}
    grads.update({f"i{i}": base.item_factors.weight.grad[i] for i in range(4)})
    moved = {name for name, g in grads.items() if float(g.abs().sum()) > 0}
    assert moved == {name for name, hops in HOPS.items() if hops <= n_layers}


def test_training_loss_is_eq15_with_one_propagation_per_batch():
    base = make_base(3, 4, dim=5, reg=0.3, n_neg=2)
    base.set_graph(interactions(PAIRS))
    calls = count_propagations(base)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([1, 3, 1]), torch.tensor(
        [[2, 3], [0, 0], [0, 2]])
    loss = base.training_loss(users, pos, neg)
    assert calls[0] == 1  # user states, positive and negative scores: one propagation
    ego = torch.cat([base.user_factors.weight, base.item_factors.weight]).detach().double()
    final = dense_reference(PAIRS, 3, 4, ego, 3)
    e_u, e_i = final[users], final[3:]
    x_pos = (e_u * e_i[pos]).sum(-1)
    x_neg = (e_u[:, None] * e_i[neg]).sum(-1)
    bpr = F.softplus(x_neg - x_pos[:, None]).mean()  # -ln sigma(x_ui - x_uj)
    rows = [ego[users], ego[3 + pos], ego[3 + neg].flatten(0, 1) / math.sqrt(2)]
    l2 = 0.5 * sum(float(r.pow(2).sum()) for r in rows) / 3
    assert float(loss.detach()) == pytest.approx(float(bpr) + 0.3 * l2, rel=1e-5)
    loss.backward()  # gradients through the sparse products
    assert float(base.user_factors.weight.grad.abs().sum()) > 0
    assert base._pinned is None  # the batch's embeddings are not kept after it


# --- the cache of propagated embeddings ------------------------------------------------------

def fresh(base: LightGCNBase) -> tuple[torch.Tensor, torch.Tensor]:
    """The propagated embeddings recomputed from the current parameters, bypassing the cache."""
    with torch.no_grad():
        return LightGCNBase.propagate(base)


def test_scoring_without_gradients_propagates_once_and_never_stale():
    base = make_base(3, 4, dim=5)
    base.set_graph(interactions(PAIRS))
    calls = count_propagations(base)
    everyone, items = torch.arange(3), torch.arange(4)
    base.eval()
    with torch.no_grad():
        before = base.score_items(base.user_state(everyone), items)
        for _ in range(5):  # scoring users block by block: no new propagation
            base.score_items(base.user_state(everyone[:2]), items)
            base(everyone, torch.tensor([0, 1, 2]))
    assert calls[0] == 1
    assert not before.requires_grad

    # Training resumes: an Adam step, then scoring again reads the new parameters.
    optimizer = torch.optim.Adam(base.parameters(), lr=0.1)
    base.train()
    base.training_loss(everyone, torch.tensor([1, 3, 1]), torch.tensor([[2], [0], [0]])).backward()
    optimizer.step()
    base.eval()
    with torch.no_grad():
        after = base.score_items(base.user_state(everyone), items)
    users, item_rows = fresh(base)
    torch.testing.assert_close(after, users @ item_rows.T)
    assert not torch.allclose(after, before)

    # Parameters changed in eval mode, with no change of mode: loading a state, reset_users.
    state = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        base.user_factors.weight.mul_(2.0)
        doubled = base.score_items(base.user_state(everyone), items)
        torch.testing.assert_close(doubled, fresh(base)[0] @ fresh(base)[1].T)
        base.load_state_dict(state)
        torch.testing.assert_close(base.score_items(base.user_state(everyone), items), after)
        base.reset_users(torch.tensor([2]))
        torch.testing.assert_close(base.user_state(everyone), fresh(base)[0])
    # A new dtype or a new graph: recomputed too.
    base.double()
    with torch.no_grad():
        assert base.user_state(everyone).dtype == torch.float64
    base.set_graph(interactions(PAIRS[:3]))
    with torch.no_grad():
        torch.testing.assert_close(base.user_state(everyone), fresh(base)[0])


def test_gradients_bypass_the_cache_and_frozen_bases_use_it():
    base = make_base(3, 4, dim=5)
    base.set_graph(interactions(PAIRS))
    calls = count_propagations(base)
    users = torch.tensor([0, 1])
    first, second = base.user_state(users), base.user_state(users)  # trainable, grad on
    assert first.requires_grad and second.requires_grad and calls[0] == 2
    for p in base.parameters():  # a pretrained base under a transfer method
        p.requires_grad_(False)
    state = torch.zeros(2, 5, requires_grad=True)
    for _ in range(3):  # fold-in style: gradients to a state, the base fixed
        loss = base.loss_with(state, torch.tensor([0, 1]), torch.tensor([[2], [3]]))
        (grad,) = torch.autograd.grad(loss, state)
        assert float(grad.abs().sum()) > 0
    assert calls[0] == 3
    # Under torch.func transforms (TMCDR's vmap over tasks) a frozen base scores too.
    base.train()  # drops the cache: the propagation then runs inside the transform
    states = torch.randn(4, 2, 5)
    grads = torch.func.vmap(torch.func.grad(base.loss_with))(
        states, torch.tensor([0, 1]).expand(4, 2), torch.tensor([[2], [3]]).expand(4, 2, 1))
    for t in range(4):
        s = states[t].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(
            base.loss_with(s, torch.tensor([0, 1]), torch.tensor([[2], [3]])), s)
        torch.testing.assert_close(grads[t], expected)
    assert calls[0] == 4


# --- the graph through fitting, saving, loading and the base cache ---------------------------

@pytest.fixture(scope="module")
def cluster_split():
    return LeaveOneOut().split(cluster_data(), 0)


def test_pretraining_builds_the_graph_from_the_rows_it_trains_on(cluster_split):
    from cdrec.models.bases.pretrain import new_base, pretrain_base

    train = cluster_split.train
    config = LightGCNConfig(dim=8, epochs=1, holdout=0.1)
    context = FitContext(progress=False)
    base = pretrain_base(train, "d", "LightGCN", config, context)  # no validation: holdout
    assert isinstance(base, LightGCNBase) and base.adjacency is not None
    rows = train.data["d"].interactions
    n_hold = int(0.1 * len(rows))
    assert base.adjacency._nnz() == 2 * (len(rows) - n_hold)  # held-out rows are not edges
    # With validation there is no holdout: every training row is an edge.
    base = new_base(train, "d", "LightGCN", config, context)
    pretrain_base(train, "d", "LightGCN", config, context, base=base,
                  validate=lambda: (0.0, "x", True))
    assert base.adjacency._nnz() == 2 * len(rows)
    dense = base.adjacency.to_dense()
    assert float(dense[rows.user, train.data.n_users + rows.item].min()) > 0


def test_fitted_model_finds_the_clusters_and_survives_save_and_load(cluster_split, tmp_path):
    from cdrec.models.persist import load_model

    pop = cluster_split.test.evaluate(
        build_model("Popularity").fit(cluster_split.train, cluster_split.validation))
    model = build_model("LightGCN", dim=16, epochs=30, batch_size=256, lr=0.01).fit(
        cluster_split.train, cluster_split.validation, FitContext(progress=False))
    got = cluster_split.test.evaluate(model)
    # Random ranking of 1 + 99 gives HR@10 ~ 0.1; the clusters leave ~20 rivals, HR@10 ~ 0.5.
    assert got["HR@10"] > pop["HR@10"] + 0.25, (got, pop)
    assert got["NDCG@10"] > 2 * pop["NDCG@10"], (got, pop)

    loaded = load_model(model.save(tmp_path / "lightgcn.pt"))
    assert torch.equal(loaded.base("d").adjacency.to_dense(),
                       model.base("d").adjacency.to_dense())
    users = torch.arange(50).repeat_interleave(4)
    items = torch.randint(200, (users.numel(),), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.predict("d", users, items), model.predict("d", users, items))
    assert torch.equal(loaded.score_users("d", torch.arange(20), 200),
                       model.score_users("d", torch.arange(20), 200))


@pytest.fixture(scope="module")
def implicit_coldstart():
    from conftest import make_transfer_data

    from cdrec.scenarios.coldstart import ColdStartUsers

    data = make_transfer_data(n_users=300, per_user=15)
    return ColdStartUsers("src", "tgt", implicit=True).split(data, 0)


def test_base_cache_reuses_pretrained_lightgcn_bases_with_their_graph(implicit_coldstart):
    from cdrec.models.bases.cache import BaseCache

    split = implicit_coldstart
    base_config = {"epochs": 2, "dim": 8, "batch_size": 512}
    users = split.test.users[:30]
    items = torch.arange(users.numel()) % 120

    def fitted(name, cache):
        seed_everything(0)
        context = FitContext(seed=0, progress=False, base_cache=cache)
        model = build_model(name, base_config=base_config, epochs=2)
        model.fit(split.train, split.validation, context)
        return model, model.predict("tgt", users, items)

    cache = BaseCache()
    fitted("EMCDR_LightGCN", cache)
    model, reused = fitted("TMCDR_LightGCN", cache)
    assert (cache.hits, cache.misses) == (2, 2)  # source and target bases reused
    for base in (model.source_, model.target_):
        assert isinstance(base, LightGCNBase) and base.adjacency is not None
    _, trained = fitted("TMCDR_LightGCN", None)
    assert torch.equal(reused, trained)  # exact: same numbers as training them


# --- bad settings ----------------------------------------------------------------------------

def test_bad_settings_are_refused(transfer_data):
    from cdrec.scenarios.coldstart import ColdStartUsers

    with pytest.raises(ValidationError, match="sparse: true does not apply to LightGCN"):
        build_model("LightGCN", sparse=True)
    with pytest.raises(ValidationError, match="sparse: true does not apply to LightGCN"):
        build_model("EMCDR_LightGCN", base_config={"sparse": True})
    with pytest.raises(ValidationError, match="n_layers"):
        build_model("LightGCN", n_layers=-1)
    with pytest.raises(ValueError, match="implicit feedback"):
        LightGCNBase(3, 4, LightGCNConfig(), implicit=False)
    split = ColdStartUsers("src", "tgt").split(transfer_data, 0)  # explicit ratings
    with pytest.raises(ValueError, match="implicit: true"):
        build_model("LightGCN", epochs=1).fit(split.train, context=FitContext(progress=False))
    base = make_base(3, 4)
    with pytest.raises(RuntimeError, match="set_graph"):
        base.user_state(torch.tensor([0]))
    with pytest.raises(ValueError, match="outside the base"):
        base.set_graph(interactions([(0, 4)]))


def test_a_run_config_takes_it():
    from pathlib import Path

    from cdrec.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "loo_amazon_sample.yaml",
                      ["models={Popularity: {}, LightGCN: {n_layers: 2}}"])
    assert list(cfg.models) == ["Popularity", "LightGCN"]


# --- the shipped sample ----------------------------------------------------------------------

def test_beats_popularity_on_the_amazon_sample():
    """Leave-one-out on the shipped phone domain (validation and test NDCG@10 over 1 + 99
    items). A short budget (8 epochs, lr 0.01, 32 dims) for speed; popularity is a strong floor
    on this sample (HR@10 > 0.3)."""
    from cdrec.data.catalog import sample_path
    from cdrec.data.readers import read_amazon_implicit_pair

    data = read_amazon_implicit_pair(sample_path("amazon_implicit"), "phone", "electronic")
    split = LeaveOneOut().split(data.replace_domains({"phone": data["phone"]}), 0)
    pop = build_model("Popularity").fit(split.train, split.validation)
    context = FitContext(progress=False)
    model = build_model("LightGCN", epochs=8, lr=0.01, dim=32).fit(
        split.train, split.validation, context)
    assert [s.stage for s in context.stages] == ["base_phone"]
    for evaluator in (split.validation, split.test):
        got, floor = evaluator.evaluate(model)["NDCG@10"], evaluator.evaluate(pop)["NDCG@10"]
        assert got > floor + 0.01, (got, floor)


def test_transfer_methods_read_the_propagated_item_vectors():
    """PTUPCDR's and SSCDR's item vectors are the ones LightGCN scores with (propagated), not
    its ego rows, so they live in the same space as its user states."""
    from cdrec.models.coldstart.ptupcdr import source_item_vectors
    from cdrec.models.coldstart.sscdr import item_points

    base = make_base(3, 4)
    base.set_graph(interactions([(0, 0), (0, 1), (1, 1), (2, 3)]))
    items = torch.tensor([0, 1, 3])
    with torch.no_grad():
        propagated = base.propagate()[1][items]
        assert torch.allclose(source_item_vectors(base, items), propagated)
        assert torch.allclose(item_points(base, items), propagated)
        assert not torch.allclose(propagated, base.item_factors(items))
