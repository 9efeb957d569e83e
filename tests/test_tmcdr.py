"""TMCDR: the MAML step against hand-derived gradients, task batching, and transfer on real signal."""

from __future__ import annotations

import pytest
import torch

from cdrec.data.dataset import Interactions
from cdrec.models import build_model
from cdrec.models.bases.mf import MFBase, MFConfig
from cdrec.models.coldstart.tmcdr import TaskTensors, maml_objective
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.stats import align_per_user, paired_tests
from cdrec.train import FitContext


def tiny_task(lam: float, first_order: bool):
    """One task: U_a = {user 0}, U_b = {user 1}, one rating each, plain MF with dim 1 and a
    linear meta network f(s) = w s + c."""
    base = MFBase(2, 2, MFConfig(dim=1, use_bias=False), implicit=False)
    q = torch.tensor([0.7, -1.3])
    with torch.no_grad():
        base.item_factors.weight.copy_(q.view(2, 1))
    meta = torch.nn.Linear(1, 1)
    with torch.no_grad():
        meta.weight.fill_(0.4)
        meta.bias.fill_(-0.2)
    states = torch.tensor([[1.5], [-0.8]])
    r = torch.tensor([2.0, 1.0])
    one = torch.ones(1, 1)

    def half(user: int) -> list[torch.Tensor]:
        return [torch.tensor([[user]]), torch.zeros(1, 1, dtype=torch.long),
                torch.tensor([[user]]), r[user].view(1, 1), one]

    loss_fn = maml_objective(meta, base.loss_with, states, lam, first_order=first_order)
    loss = loss_fn([*half(0), *half(1)])
    loss.backward()
    return meta, (q, states.view(-1), r), loss


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_step_matches_the_hand_derived_gradient(first_order):
    lam = 0.05
    meta, (q, s, r), loss = tiny_task(lam, first_order)
    w, c = 0.4, -0.2
    e_a = (w * s[0] + c) * q[0] - r[0]
    w1 = w - lam * 2 * e_a * q[0] * s[0]           # Eq. 2 on both parameters
    c1 = c - lam * 2 * e_a * q[0]
    e_b = (w1 * s[1] + c1) * q[1] - r[1]
    assert float(loss.detach()) == pytest.approx(float(e_b**2), rel=1e-6)   # Eq. 3
    if first_order:
        dw_dw, dc_dw, dw_dc, dc_dc = 1.0, 0.0, 0.0, 1.0
    else:  # derivatives of the adapted parameters w', c' with respect to w, c
        dw_dw = 1 - 2 * lam * q[0] ** 2 * s[0] ** 2
        dc_dw = -2 * lam * q[0] ** 2 * s[0]
        dw_dc = -2 * lam * q[0] ** 2 * s[0]
        dc_dc = 1 - 2 * lam * q[0] ** 2
    grad_w = 2 * e_b * q[1] * (s[1] * dw_dw + dc_dw)
    grad_c = 2 * e_b * q[1] * (s[1] * dw_dc + dc_dc)
    assert float(meta.weight.grad) == pytest.approx(float(grad_w), rel=1e-5)
    assert float(meta.bias.grad) == pytest.approx(float(grad_c), rel=1e-5)


def test_second_order_term_is_really_there():
    second, _, _ = tiny_task(0.3, first_order=False)
    first, _, _ = tiny_task(0.3, first_order=True)
    assert abs(float(second.weight.grad - first.weight.grad)) > 1e-3


def test_tasks_cover_each_users_rows_once_and_pad_with_zero_weight():
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(0, 40, (600,), generator=gen)
    items = torch.randint(0, 30, (600,), generator=gen)
    rows = Interactions(users, items, torch.rand(600, generator=gen) * 4 + 1)
    overlap = torch.unique(users)
    tasks = TaskTensors(rows, overlap, 30, implicit=False, n_neg=4)
    batch = tasks.epoch(8, torch.Generator().manual_seed(1))
    seen = []
    for users_h, slot, item, target, weight in (batch[:5], batch[5:]):
        assert users_h.shape[1] == 4
        for t in range(users_h.shape[0]):
            real = weight[t] > 0
            assert int(real.sum()) == int(torch.isin(rows.user, users_h[t]).sum())
            got = sorted(zip(users_h[t][slot[t][real]].tolist(), item[t][real].tolist(),
                             target[t][real].tolist(), strict=True))
            mask = torch.isin(rows.user, users_h[t])
            want = sorted(zip(rows.user[mask].tolist(), rows.item[mask].tolist(),
                              rows.rating[mask].tolist(), strict=True))
            assert got == want
            seen += users_h[t].tolist()
    assert len(seen) == len(set(seen)) == (overlap.numel() // 8) * 8  # U_a, U_b disjoint


def test_tmcdr_beats_target_only_on_shared_taste(transfer_data):
    split = ColdStartUsers("src", "tgt").split(transfer_data, 0)
    quick = {"epochs": 40, "batch_size": 2048, "lr": 0.01}
    ctx = FitContext(progress=False)
    tmcdr = build_model("TMCDR_MF", base_config=quick, epochs=60).fit(
        split.train, split.validation, ctx)
    assert [s.stage for s in ctx.stages] == ["base_src", "base_tgt", "meta"]
    tgt = build_model("TGT", **quick).fit(split.train, split.validation,
                                          FitContext(progress=False))
    t, o = split.test.evaluate(tmcdr), split.test.evaluate(tgt)
    assert t["RMSE"] < 0.85 * o["RMSE"], (t, o)
    a, b = align_per_user(split.test.per_user(tmcdr).assign(seed=0),
                          split.test.per_user(tgt).assign(seed=0), "RMSE")
    assert paired_tests(a, b, higher_is_better=False)["significant"]


def test_implicit_tmcdr_runs_on_real_data(douban_sample):
    split = ColdStartUsers("book", "music", implicit=True).split(douban_sample, 0)
    model = build_model("TMCDR_BPR", base_config={"epochs": 2}, epochs=2).fit(
        split.train, split.validation, FitContext(progress=False))
    metrics = split.test.evaluate(model)
    assert 0.0 < metrics["AUC"] < 1.0 and 0.0 < metrics["NDCG@10"] <= 1.0
