"""Sparse (row-wise) training of the embedding bases: gradients only on the rows a batch
touches, stepped by LazyAdam; the same model as dense Adam when every row is in every batch."""

from __future__ import annotations

import pytest
import torch

from cdrec.data.dataset import Interactions
from cdrec.models import build_model
from cdrec.models.bases.pretrain import fit_base, new_base
from cdrec.models.training import sparse_parameters
from cdrec.nn.sparse import gather_rows
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext, adam_step


@pytest.mark.parametrize("shape", [(10,), (10, 3)])
def test_gather_rows_gradient_is_the_dense_one_as_a_sparse_tensor(shape):
    gen = torch.Generator().manual_seed(0)
    index = torch.tensor([[1, 3], [3, 7]])  # a repeated row: its gradients add up
    weight = torch.randn(*index.shape, *shape[1:], generator=gen)
    sparse = torch.nn.Parameter(torch.randn(shape, generator=gen))
    dense = torch.nn.Parameter(sparse.detach().clone())
    (gather_rows(sparse, index, sparse=True) * weight).sum().backward()
    (gather_rows(dense, index, sparse=False) * weight).sum().backward()
    assert sparse.grad.is_sparse and not dense.grad.is_sparse
    assert torch.allclose(sparse.grad.to_dense(), dense.grad)


def _split(transfer_data):
    return ColdStartUsers("src", "tgt").split(transfer_data, 0)


@pytest.mark.parametrize("base", ["MF", "GMF", "DNN"])
def test_full_batch_sparse_and_dense_adam_fit_the_same_model(transfer_data, base):
    """With every training row in every batch, each row of every table gets a gradient at every
    step, so the lazy moments are the dense ones and LazyAdam is Adam: the fitted models agree
    up to float rounding."""
    train = _split(transfer_data).train
    inter = train.data["tgt"].interactions
    present = torch.zeros(train.data.n_users, dtype=torch.bool)
    present[inter.user] = True
    fitted = {}
    for sparse in (False, True):
        context = FitContext(seed=0, progress=False)
        config = build_model(base).Config(epochs=8, batch_size=len(inter), holdout=0.0,
                                          sparse=sparse, lr=0.05)
        model = new_base(train, "tgt", base, config, context)
        fit_base(model, inter, train.data["tgt"].n_items, context=context, stage="s")
        fitted[sparse] = model
    users = present.nonzero().squeeze(1)[:200]
    items = torch.randint(0, train.data["tgt"].n_items, users.shape)
    with torch.no_grad():
        dense, sparse = fitted[False](users, items), fitted[True](users, items)
        initial = new_base(train, "tgt", base, build_model(base).Config(),
                           FitContext(seed=0))(users, items)
    assert torch.allclose(dense, sparse, atol=1e-4), float((dense - sparse).abs().max())
    assert not torch.allclose(dense, initial, atol=1e-2)  # and they did train


def test_a_sparse_step_touches_only_the_batch_rows(transfer_data):
    train = _split(transfer_data).train
    context = FitContext(seed=0, progress=False)
    mf = new_base(train, "tgt", "MF", build_model("MF").Config(sparse=True), context)
    assert {id(p) for p in sparse_parameters(mf)} == {
        id(mf.user_factors.weight), id(mf.item_factors.weight), id(mf.user_bias),
        id(mf.item_bias)}
    batch = Interactions(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4.0, 2.0]))
    before = {name: p.detach().clone() for name, p in mf.named_parameters()}
    step = adam_step(list(mf.parameters()), lambda b: mf.training_loss(*b), lr=0.1,
                     sparse=sparse_parameters(mf))
    step([batch.user, batch.item, batch.rating])
    assert mf.user_factors.weight.grad is None or mf.user_factors.weight.grad.is_sparse
    for name, p in mf.named_parameters():
        moved = (p.detach() != before[name]).reshape(p.shape[0], -1).any(1)
        rows = batch.user if name.startswith("user") else batch.item
        expected = torch.zeros(p.shape[0], dtype=torch.bool)
        expected[rows] = True
        assert torch.equal(moved, expected), name


def test_sparse_rows_refuse_weight_decay():
    table = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="weight_decay does not apply"):
        adam_step([table], lambda b: b[0].sum(), lr=0.1, weight_decay=0.1, sparse=[table])


@pytest.mark.parametrize("name", ["EMCDR_MF", "TMCDR_MF", "PTUPCDR_MF", "CMF", "CST"])
def test_methods_over_sparse_bases_train_and_transfer(transfer_data, name):
    """Sparse bases inside every multi-stage method (TMCDR's meta stage runs under torch.func
    over the frozen sparse base): they fit, and beat the target-only floor on shared taste."""
    split = _split(transfer_data)
    quick = {"epochs": 30, "batch_size": 1024, "lr": 0.02, "sparse": True}
    params = {**quick} if name == "CMF" else {"base_config": quick}
    model = build_model(name, **params).fit(split.train, split.validation,
                                            FitContext(seed=0, progress=False))
    floor = build_model("TGT", **quick).fit(split.train, split.validation,
                                            FitContext(seed=0, progress=False))
    ours, tgt = split.test.evaluate(model)["RMSE"], split.test.evaluate(floor)["RMSE"]
    assert ours < tgt, (name, ours, tgt)


def test_lazy_adam_is_adam_on_touched_rows_and_leaves_the_others():
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(6, 3, generator=gen)
    targets = [torch.randn(6, 3, generator=gen) * 1e-3 for _ in range(5)]  # small gradients
    lazy = torch.nn.Embedding(6, 3, sparse=True)
    dense = torch.nn.Embedding(6, 3)
    for emb in (lazy, dense):
        emb.weight.data.copy_(start)
    from cdrec.nn.sparse import LazyAdam

    opt_lazy, opt_dense = LazyAdam(lazy.parameters(), lr=0.01), torch.optim.Adam(
        dense.parameters(), lr=0.01)
    every = torch.arange(6)
    for target in targets:  # every row each step: the same as dense Adam
        for emb, opt in ((lazy, opt_lazy), (dense, opt_dense)):
            opt.zero_grad()
            (emb(every) - target).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(lazy.weight, dense.weight, atol=1e-6)
    before = lazy.weight.detach().clone()
    m_prev = opt_lazy.state[lazy.weight]["exp_avg"].clone()
    v_prev = opt_lazy.state[lazy.weight]["exp_avg_sq"].clone()
    opt_lazy.zero_grad()
    lazy(torch.tensor([1, 4])).sum().backward()
    opt_lazy.step()
    moved = (lazy.weight.detach() != before).any(1)
    assert moved.tolist() == [False, True, False, False, True, False]
    # The touched rows follow Adam's formula by hand, at the global step count (6), from the
    # moments they had: the untouched rows' moments did not decay meanwhile.
    state = opt_lazy.state[lazy.weight]
    for row in (1, 4):  # the gradient of sum() is 1 in every entry
        m = 0.9 * m_prev[row] + 0.1
        v = 0.999 * v_prev[row] + 0.001
        expected = before[row] - 0.01 * (m / (1 - 0.9**6)) / ((v / (1 - 0.999**6)).sqrt() + 1e-8)
        assert torch.allclose(lazy.weight[row], expected, atol=1e-6)
    assert torch.equal(state["exp_avg"][0], m_prev[0])  # untouched: its moments did not decay
