"""The shared training loop: seeding, early stopping, checkpoint/resume, devices."""

from __future__ import annotations

import pytest
import torch

from cdrec.models import build_model
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext, resolve_device, train_loop


@pytest.fixture(scope="module")
def split(transfer_data):
    return ColdStartUsers("src", "tgt").split(transfer_data, 0)


def predictions(split, seed):
    model = build_model("CMF", epochs=4, batch_size=1024).fit(
        split.train, split.validation, FitContext(seed=seed, progress=False))
    ev = split.test.interactions
    return model.predict("tgt", ev.user, ev.item)


def test_same_seed_same_numbers_other_seed_other_numbers(split):
    a, b, c = predictions(split, 1), predictions(split, 1), predictions(split, 2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _regression_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen) + 0.1 * torch.randn(512, 1, generator=gen)
    return x, y


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    x, y = _regression_problem()

    def run(ckpt, fail_after=None):
        torch.manual_seed(0)
        net = torch.nn.Linear(8, 1)
        calls = {"n": 0}

        def loss_fn(batch):
            calls["n"] += 1
            if fail_after is not None and calls["n"] > fail_after:
                raise KeyboardInterrupt
            bx, by = batch
            return (net(bx) - by).pow(2).mean()

        ctx = FitContext(seed=5, progress=False, checkpoint_dir=ckpt, resume=True)
        train_loop(net, loss_fn, lambda g: [x, y], context=ctx, stage="reg", epochs=6,
                   batch_size=64, lr=0.01)
        return net.weight.detach().clone(), ctx

    straight, _ = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", fail_after=8 * 3 + 2)  # dies in epoch 4 (8 batches an epoch)
    resumed, ctx = run(tmp_path / "b")
    assert torch.equal(straight, resumed)
    assert [h["epoch"] for h in ctx.history] == [1, 2, 3, 4, 5, 6]


def test_early_stopping_restores_the_best_epoch():
    x, y = _regression_problem()
    net = torch.nn.Linear(8, 1)
    values = iter([5.0, 3.0, 4.0, 4.5, 6.0, 7.0, 1.0])
    snapshots = []

    def validate():
        snapshots.append(net.weight.detach().clone())
        return next(values), "RMSE", False

    ctx = FitContext(progress=False)
    result = train_loop(net, lambda b: (net(b[0]) - b[1]).pow(2).mean(), lambda g: [x, y],
                        context=ctx, stage="s", epochs=7, batch_size=64, lr=0.01,
                        validate=validate, patience=3)
    assert (result.best_epoch, result.epochs_run, result.best_value) == (2, 5, 3.0)
    assert torch.equal(net.weight, snapshots[1])


def test_cuda_is_never_a_silent_fallback():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_loop_settings_are_refused():
    net = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_loop(net, lambda b: b[0].sum(), lambda g: [torch.ones(2, 1)],
                   context=FitContext(progress=False), stage="s", epochs=0, batch_size=1, lr=0.1)
