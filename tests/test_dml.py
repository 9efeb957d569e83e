"""DML (Li and Tuzhilin): Gram-Schmidt, the orthogonal mapping (Eq. 3-4), the representation
stage (Eq. 2), the dual loop's stopping rule, the cross step's gradients (Eq. 5-6), the chain of
maps over N domains (Sec. 4.3), and DML beating the floor on the shipped sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_transfer_data

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.models import build_model
from cdrec.models.joint.representation import interaction_features
from cdrec.nn.autoencoder import FeatureAutoencoder, SparseRows, unit_ball
from cdrec.nn.orthogonal import OrthogonalMap, gram_schmidt
from cdrec.scenarios import KFoldRating
from cdrec.train import FitContext, adam_step, seed_everything, train_loop


def random_rotation(k: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:  # a rotation (det +1): reachable from the identity
        q[:, 0] = -q[:, 0]
    return q


def test_gram_schmidt_is_qr_with_a_positive_diagonal():
    m = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, r = torch.linalg.qr(m)
    q = q * torch.sign(torch.diagonal(r))
    g = gram_schmidt(m)
    assert torch.allclose(g, q, atol=1e-10)
    assert torch.allclose(g.T @ g, torch.eye(6, dtype=torch.float64), atol=1e-12)
    # The first column keeps its direction; a dependent column is refused.
    assert torch.allclose(g[:, 0], m[:, 0] / m[:, 0].norm())
    with pytest.raises(ValueError, match="column 1 is linearly dependent"):
        gram_schmidt(torch.tensor([[1.0, 2.0], [1.0, 2.0]]))


def test_the_mapping_stage_recovers_a_known_orthogonal_map_from_k_k_minus_1_over_2_pairs():
    k = 8
    truth = random_rotation(k, 1)
    n_pairs = k * (k - 1) // 2  # DML Sec. 4.1
    source = unit_ball(torch.randn(n_pairs, k, generator=torch.Generator().manual_seed(2)))
    target = source @ truth.T  # noiseless: w_B = X w_A
    x = OrthogonalMap(k)
    step = adam_step(list(x.parameters()), lambda b: x.dual_loss(b[0], b[1]), lr=0.02,
                     after_step=x.orthogonalise)
    train_loop(x, step, lambda g: [source, target], context=FitContext(progress=False),
               stage="mapping", epochs=600, batch_size=n_pairs)
    assert (x.weight.detach() - truth).abs().max() < 1e-3
    assert x.orthogonality_error() < 1e-5
    assert float(x.dual_loss(source, target).detach()) < 1e-5


def test_interaction_features_by_hand():
    inter = Interactions(torch.tensor([0, 0, 0, 2]), torch.tensor([1, 2, 1, 0]),
                         torch.tensor([4.0, 3.0, 2.0, 5.0]))
    dom = Domain("d", np.arange(3), inter, rating_scale=(1.0, 5.0))
    users = interaction_features(dom, 3, "user")
    # mean rating 3.5, scale width 4; user 0: item 1 rated 4 and 2 (averaged: 3), item 2 rated 3
    assert torch.allclose(users.dense(torch.arange(3)),
                          torch.tensor([[0.0, -0.125, -0.125], [0.0, 0.0, 0.0],
                                        [0.375, 0.0, 0.0]]))
    # user 1 has no ratings: no stored entry; the pattern marks rated pairs only
    assert torch.equal(users.dense(torch.arange(3), pattern=True),
                       torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.equal(users.nonempty(), torch.tensor([0, 2]))
    items = interaction_features(dom, 3, "item").dense(torch.tensor([1, 0]))
    assert torch.allclose(items, torch.tensor([[-0.125, 0.0, 0.0], [0.0, 0.0, 0.375]]))


def test_the_observed_weight_scales_the_reconstruction_error_of_rated_entries():
    torch.manual_seed(0)
    ae = FeatureAutoencoder(4, [3], 2)
    x = torch.tensor([[0.5, 0.0, 0.0, -0.25]])
    error = (ae.decoder(ae.encode(x)) - x).pow(2).detach()
    weight = torch.tensor([[50.0, 1.0, 1.0, 50.0]])
    assert float(ae.loss(x, weight).detach()) == pytest.approx(float((error * weight).mean()), rel=1e-6)
    assert float(ae.loss(x).detach()) == pytest.approx(float(error.mean()), rel=1e-6)


def test_weighted_autoencoder_codes_carry_the_item_mean_rating():
    """Sparse item vectors (10 ratings of 600 users each) of two kinds, liked (5) and
    disliked (1): with the observed weight a linear fit of the item mean on the codes explains
    much more of its variance than with plain MSE (weight 1), whose codes fit the zeros."""
    from cdrec.models.joint.representation import AutoencoderConfig, fit_embeddings

    gen = torch.Generator().manual_seed(0)
    n_users, n_items = 600, 200
    users = torch.randint(0, n_users, (2000,), generator=gen)
    items = torch.arange(n_items).repeat(10)
    rating = torch.where(items < n_items // 2, 5.0, 1.0)
    dom = Domain("d", np.arange(n_items), Interactions(users, items, rating),
                 rating_scale=(1.0, 5.0))
    feats = interaction_features(dom, n_users, "item")
    x_mean = torch.full((n_items,), 1.0).double()
    y = torch.where(torch.arange(n_items) < n_items // 2, 5.0, 1.0).double()

    def explained(weight: float) -> float:
        torch.manual_seed(0)
        codes = fit_embeddings(feats, 4, AutoencoderConfig(epochs=20, lr=1e-2),
                               context=FitContext(seed=0, progress=False), stage="ae",
                               observed_weight=weight)
        x = torch.cat([codes.double(), x_mean[:, None]], dim=1)
        fit = torch.linalg.lstsq(x, y[:, None]).solution
        return float(1 - ((x @ fit).squeeze(1) - y).pow(2).sum() / (y - y.mean()).pow(2).sum())

    weighted, plain = explained(50.0), explained(1.0)  # measured: 0.69, 0.28
    assert weighted > 0.6
    assert plain < 0.4


def test_sparse_rows_gather_any_rows_as_dense():
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(20, 7, generator=gen) * (torch.rand(20, 7, generator=gen) < 0.3)
    rows = SparseRows.from_dense(dense)
    pick = torch.tensor([3, 0, 3, 19, 5])
    assert torch.equal(rows.dense(pick), dense[pick])
    assert torch.equal(rows.nonempty(), torch.nonzero(dense.abs().sum(1) > 0).flatten())


def test_autoencoder_embeddings_stay_in_the_unit_ball_and_the_vae_trains():
    x = torch.rand(32, 10)
    for variational in (False, True):
        ae = FeatureAutoencoder(10, [8, 4], 3, variational=variational)
        emb = ae.encode(x * 100).detach()
        assert emb.shape == (32, 3)
        assert float(emb.norm(dim=1).max()) <= 1 + 1e-6
        loss = ae.loss(x)
        loss.backward()
        assert all(p.grad is not None for p in ae.parameters())


@pytest.fixture(scope="module")
def small_split():
    data = make_transfer_data(n_users=200, n_items=40, per_user=12)
    return KFoldRating(k=5).split(data, 0)


def _fit(split, **params):
    seed_everything(0)
    model = build_model("DML", **{"epochs": 3, "batch_size": 256,
                                  "autoencoder": {"epochs": 3}, **params})
    return model.fit(split.train, split.validation, FitContext(progress=False))


def test_x_stays_orthogonal_after_training_and_the_loop_stops_on_the_tolerance(small_split):
    model = _fit(small_split, epochs=8, tolerance=0.0, patience=50)
    assert model.maps[0].orthogonality_error() < 1e-5
    assert model.schedule_[-1].stage == "dual_loop"
    assert model.schedule_[-1].epochs_run == 8  # tolerance 0: every round runs
    assert [r.stage for r in model.schedule_[:3]] == ["in_domain@1", "mapping@1", "cross@1"]
    # A tolerance larger than any change stops after the second round.
    early = _fit(small_split, epochs=8, tolerance=1e9, patience=50)
    assert early.schedule_[-1].epochs_run == 2
    # The chosen round is the best on validation, never after the last one run.
    assert 1 <= model.schedule_[-1].best_epoch <= 8


@pytest.mark.parametrize("cross", ["eq56", "algorithm1", "transfer"])
def test_the_cross_step_reaches_the_recommenders_it_names(small_split, cross):
    model = _fit(small_split, epochs=1, cross=cross)
    model.train()
    flag = torch.tensor([0, 0, 1, 1])
    users = torch.tensor([0, 1, 0, 1])  # users 0 and 1 rate in both domains here
    batch = [flag, users, torch.tensor([0, 1, 0, 1]), torch.tensor([0.5, 0.7, 0.2, 1.0])]
    model.zero_grad()
    model._cross_loss(batch).backward()
    a, b = model.domains_
    grads = {d: model.recommenders[d].mlp[-1].weight.grad for d in (a, b)}
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads.values())
    # Only the domain-a rows: eq56 and transfer train RS_a with them, algorithm1 trains RS_b.
    model.zero_grad()
    model._cross_loss([t[:2] for t in batch]).backward()
    named = b if cross == "algorithm1" else a
    other = a if named == b else b
    assert float(model.recommenders[named].mlp[-1].weight.grad.abs().sum()) > 0
    assert model.recommenders[other].mlp[-1].weight.grad is None
    # X gets no gradient from the fixed-embedding cross step... but it is what maps the input:
    mapped = model._cross_inputs(0, users[:2])[0][1]
    own = model.users[a](users[:2])
    if cross == "transfer":
        assert torch.allclose(mapped, model.maps[0].inverse(model.users[b](users[:2])))
    else:
        assert torch.allclose(mapped, model.maps[0](own))


def test_ids_variant_learns_embeddings_through_both_steps(small_split):
    model = _fit(small_split, epochs=1, features="ids")
    model.train()
    batch = [torch.tensor([0, 1]), torch.tensor([3, 3]), torch.tensor([2, 2]),
             torch.tensor([0.5, 0.5])]
    for loss in (model._in_domain_loss, model._cross_loss):
        model.zero_grad()
        loss(batch).backward()
        a = model.domains_[0]
        assert float(model.users[a].weight.grad[3].abs().sum()) > 0


def _three_domain_data() -> CrossDomainData:
    base = make_transfer_data(n_users=150, n_items=30, per_user=10, seed=3)
    other = make_transfer_data(n_users=150, n_items=30, per_user=10, seed=4)
    domains = {"a": base["src"], "b": base["tgt"],
               "c": Domain("c", other["tgt"].item_ids, other["tgt"].interactions,
                           rating_scale=(1.0, 5.0))}
    return CrossDomainData(base.user_ids, domains, name="three")


def test_three_domains_chain_their_maps():
    split = KFoldRating(k=5).split(_three_domain_data(), 0)
    model = _fit(split, epochs=2, chain=["c", "a", "b"])
    assert model.domains_ == ["c", "a", "b"] and len(model.maps) == 2
    x_ca, x_ab = model.maps[0].weight, model.maps[1].weight
    assert torch.allclose(model.mapping("c", "b"), x_ab @ x_ca)
    assert torch.allclose(model.mapping("b", "c"), (x_ab @ x_ca).T)
    assert torch.allclose(model.mapping("c", "b").T @ model.mapping("c", "b"), torch.eye(16),
                          atol=1e-5)
    scores = split.test.evaluate(model)
    assert all(np.isfinite(scores[f"{d}/RMSE"]) for d in "abc")


def test_bad_chains_are_refused(small_split):
    with pytest.raises(ValueError, match="two or more distinct domains"):
        _fit(small_split, chain=["src"])
    with pytest.raises(ValueError, match="two or more distinct domains"):
        _fit(small_split, chain=["src", "nope"])


def test_fewer_overlap_users_for_the_map(small_split):
    model = _fit(small_split, epochs=1, overlap_users=5)
    rows = model._overlap_rows(small_split.train, model.domains_, torch.Generator())
    assert rows[1].numel() == 5
    none = _fit(small_split, epochs=1, overlap_users=0)  # no mapping stage: X stays I
    assert torch.equal(none.maps[0].weight.detach(), torch.eye(16))
    assert "mapping@1" not in [r.stage for r in none.schedule_]


def test_dml_beats_the_item_mean_floor_on_the_sample(douban_sample):
    split = KFoldRating(k=5).split(douban_sample, 0)
    floor = build_model("ItemMean").fit(split.train)
    model = _fit(split, epochs=3, features="ids")
    dml, item_mean = split.test.evaluate(model), split.test.evaluate(floor)
    for domain in ("book", "music"):
        assert dml[f"{domain}/RMSE"] < item_mean[f"{domain}/RMSE"]


def test_the_douban_config_lists_models_that_serve_its_scenario():
    from pathlib import Path

    from cdrec.config import load_config
    from cdrec.models import available_models

    cfg = load_config(Path(__file__).parents[1] / "configs" / "dml_douban.yaml")
    names = {label: cfg.model_params(label)[0] for label in cfg.models}
    assert {"ItemMean", "NeuMF", "NCF-joint", "CMF", "CoNet", "DDTCDR", "DML"} <= set(
        names.values())
    for label, name in names.items():
        assert "kfold_rating" in available_models()[name].supports, label
    assert set(cfg.tune) <= set(cfg.models)
