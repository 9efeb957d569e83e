"""The shared training loop: seeding, early stopping, checkpoint/resume, devices."""

from __future__ import annotations

import pytest
import torch

from cdrec.models import build_model
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import (
    FitContext,
    OptimizerStep,
    Update,
    adam_step,
    resolve_device,
    run_schedule,
    train_loop,
)


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


def _regression_fit(ckpt, fail_after=None, epochs=6, every=1):
    """A linear regression trained by the loop with checkpoints; with ``fail_after`` it is
    killed (KeyboardInterrupt) after that many batches (8 batches an epoch)."""
    x, y = _regression_problem()
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 1)
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise KeyboardInterrupt
        bx, by = batch
        return (net(bx) - by).pow(2).mean()

    ctx = FitContext(seed=5, progress=False, checkpoint_dir=ckpt, resume=True,
                     checkpoint_every=every)
    train_loop(net, adam_step(net.parameters(), loss_fn, lr=0.01), lambda g: [x, y],
               context=ctx, stage="reg", epochs=epochs, batch_size=64)
    return net.weight.detach().clone(), ctx


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    straight, _ = _regression_fit(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _regression_fit(tmp_path / "b", fail_after=8 * 3 + 2)  # dies in epoch 4
    resumed, ctx = _regression_fit(tmp_path / "b")
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
    step = adam_step(net.parameters(), lambda b: (net(b[0]) - b[1]).pow(2).mean(), lr=0.01)
    result = train_loop(net, step, lambda g: [x, y], context=ctx, stage="s", epochs=7,
                        batch_size=64, validate=validate, patience=3)
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
        train_loop(net, adam_step(net.parameters(), lambda b: b[0].sum(), lr=0.1),
                   lambda g: [torch.ones(2, 1)], context=FitContext(progress=False), stage="s",
                   epochs=0, batch_size=1)


class _Interrupt(Exception):
    """Raised by a test's loss to stop a fit mid-epoch, as a crash or Ctrl-C would."""


def _adversarial_fit(ckpt, fail_after=None):
    """Two modules, two Adam optimisers stepping in turn on every batch (a GAN's shape): a
    critic d learns to score real rows above generated ones, a generator g learns to fool it.
    The generator's noise is drawn from torch's global RNG, so resuming needs that state too."""
    x, _ = _regression_problem()
    torch.manual_seed(0)
    g, d = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)
    pair = torch.nn.ModuleDict({"g": g, "d": d})
    calls = {"n": 0}

    def fake(n):
        return g(torch.randn(n, 4))

    def critic_loss(batch):
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise _Interrupt
        (real,) = batch
        return (torch.nn.functional.softplus(-d(real))
                + torch.nn.functional.softplus(d(fake(len(real)).detach()))).mean()

    def generator_loss(batch):
        return torch.nn.functional.softplus(-d(fake(len(batch[0])))).mean()

    step = OptimizerStep([
        Update(torch.optim.Adam(d.parameters(), lr=0.01), critic_loss, name="critic"),
        Update(torch.optim.Adam(g.parameters(), lr=0.01), generator_loss, name="generator")])
    ctx = FitContext(seed=3, progress=False, checkpoint_dir=ckpt, resume=True)
    train_loop(pair, step, lambda gen: [x], context=ctx, stage="gan", epochs=5, batch_size=64)
    return pair, step, ctx


def test_two_optimisers_step_in_turn_and_resume_to_the_same_numbers(tmp_path):
    straight, step, ctx = _adversarial_fit(tmp_path / "a")
    batches = 5 * 8  # 512 rows in batches of 64
    for update in step.updates:  # each optimiser stepped once per batch
        states = update.optimizer.state_dict()["state"].values()
        assert all(int(s["step"]) == batches for s in states)
    record = ctx.history[-1]
    assert record["train_loss"] == pytest.approx(record["train_critic"]
                                                 + record["train_generator"])
    with pytest.raises(_Interrupt):
        _adversarial_fit(tmp_path / "b", fail_after=8 * 2 + 3)  # dies in epoch 3
    resumed, resumed_step, _ = _adversarial_fit(tmp_path / "b")
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    for a, b in zip(step.updates, resumed_step.updates, strict=True):  # Adam moments too
        for sa, sb in zip(a.optimizer.state_dict()["state"].values(),
                          b.optimizer.state_dict()["state"].values(), strict=True):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_a_finished_stage_reloaded_leaves_torch_rng_where_training_left_it(tmp_path):
    """Code after a stage (a mapping's nn.Linear init, dropout) draws from torch's global RNG;
    a resumed fit that reloads the finished stage must draw the same numbers."""
    x, y = _regression_problem()

    def fit():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        ctx = FitContext(seed=1, progress=False, checkpoint_dir=tmp_path, resume=True)
        step = adam_step(net.parameters(), lambda b: (net(b[0]) - b[1]).pow(2).mean(), lr=0.01)
        train_loop(net, step, lambda g: [x, y], context=ctx, stage="s", epochs=2, batch_size=64)
        return torch.rand(3)

    first, again = fit(), fit()  # the second reloads the finished stage from its checkpoint
    assert torch.equal(first, again)


def _dual_fit(ckpt, fail_after=None, rounds=4, tol=None):
    """Two halves of a model trained alternately, stage by stage (a dual loop)."""
    x, y = _regression_problem()
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 1), torch.nn.Linear(8, 1)
    both = torch.nn.ModuleDict({"a": a, "b": b})
    ctx = FitContext(seed=2, progress=False, checkpoint_dir=ckpt, resume=True)
    calls = {"n": 0}

    def loss(batch):
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise _Interrupt
        return ((a(batch[0]) + b(batch[0])) - batch[1]).pow(2).mean()

    def stage_of(half):
        def run(name):
            step = adam_step(half.parameters(), loss, lr=0.02)
            return train_loop(both, step, lambda g: [x, y], context=ctx, stage=name, epochs=2,
                              batch_size=128)
        return run

    losses = []

    def converged(results):
        with torch.no_grad():
            losses.append(float(((a(x) + b(x)) - y).pow(2).mean()))
        return tol is not None and len(losses) > 1 and losses[-2] - losses[-1] < tol

    results = run_schedule([("a", stage_of(a)), ("b", stage_of(b))], rounds=rounds,
                           converged=converged)
    return both, results, losses


def test_a_stage_schedule_alternates_stops_at_tolerance_and_resumes(tmp_path):
    straight, results, losses = _dual_fit(tmp_path / "a")
    assert [r.stage for r in results] == ["a@1", "b@1", "a@2", "b@2", "a@3", "b@3", "a@4", "b@4"]
    assert losses == sorted(losses, reverse=True)  # each round lowers the joint loss
    with pytest.raises(_Interrupt):
        _dual_fit(tmp_path / "b", fail_after=4 * 2 * 3 + 5)  # dies in round 2's stage b
    resumed, _, resumed_losses = _dual_fit(tmp_path / "b")
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert resumed_losses == losses
    # A tolerance larger than any round's gain stops after the second round.
    _, early, _ = _dual_fit(tmp_path / "c", tol=1e9)
    assert [r.stage for r in early] == ["a@1", "b@1", "a@2", "b@2"]


def test_a_non_finite_loss_names_the_update_stage_and_epoch():
    net = torch.nn.Linear(1, 1)
    step = OptimizerStep([Update(torch.optim.Adam(net.parameters()),
                                 lambda b: net(b[0]).sum() * float("nan"), name="critic")])
    with pytest.raises(FloatingPointError, match=r"m s: critic became nan at epoch 1"):
        train_loop(net, step, lambda g: [torch.ones(4, 1)],
                   context=FitContext(progress=False, label="m"), stage="s", epochs=2,
                   batch_size=2)
    with pytest.raises(ValueError, match="names must differ"):
        OptimizerStep([Update(torch.optim.Adam(net.parameters()), lambda b: b[0].sum())] * 2)
    with pytest.raises(ValueError, match="no trainable parameters"):
        adam_step([], lambda b: b[0].sum(), lr=0.1)


def test_checkpoints_at_an_interval_resume_to_the_same_numbers(tmp_path):
    straight, _ = _regression_fit(tmp_path / "a", epochs=7, every=3)
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 6; the last checkpoint is epoch 3's
        _regression_fit(tmp_path / "b", fail_after=8 * 5 + 2, epochs=7, every=3)
    assert torch.load(tmp_path / "b" / "reg.pt", weights_only=True)["epoch"] == 3
    resumed, ctx = _regression_fit(tmp_path / "b", epochs=7, every=3)
    assert torch.equal(straight, resumed)
    assert [h["epoch"] for h in ctx.history] == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="checkpoint_every"):
        FitContext(checkpoint_every=0)


def test_a_mapping_stage_snapshots_only_what_it_trains(tmp_path, transfer_data):
    """The frozen pretrained bases are not copied at each improvement nor written in the
    mapping stage's checkpoints: those hold the mapping (and buffers) only."""
    from cdrec.scenarios.coldstart import ColdStartUsers

    split = ColdStartUsers("src", "tgt").split(transfer_data, 0)
    model = build_model("EMCDR", epochs=3, base_config={"epochs": 2})
    model.fit(split.train, split.validation,
              FitContext(seed=0, progress=False, checkpoint_dir=tmp_path))
    saved = torch.load(tmp_path / "mapping.pt", weights_only=True)
    buffers = {name for name, _ in model.named_buffers()}
    for part in ("module", "best_state"):
        params = set(saved[part]) - buffers
        assert params == {n for n, _ in model.transfer_.named_parameters(prefix="transfer_")}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("source_.") for n in frozen)  # in the model, not in the snapshot


def test_a_stage_that_writes_to_a_frozen_parameter_is_refused():
    """Snapshots leave frozen parameters out: a stage that changed one would restore a mix of
    epochs, so the loop refuses it instead of diverging silently."""
    x, y = _regression_problem()
    net = torch.nn.Sequential(torch.nn.Linear(8, 1), torch.nn.Linear(1, 1))
    net[1].weight.requires_grad_(False)

    def leaky_after_step():
        net[1].weight.mul_(0.99)  # an in-place write to a frozen parameter

    step = adam_step(net[0].parameters(), lambda b: (net(b[0]) - b[1]).pow(2).mean(), lr=0.01,
                     after_step=leaky_after_step)
    with pytest.raises(RuntimeError, match=r"wrote to frozen parameters \['1.weight'\]"):
        train_loop(net, step, lambda g: [x, y], context=FitContext(progress=False), stage="s",
                   epochs=2, batch_size=64)


def _stopping_fit(label: str = "m") -> None:
    """Seven epochs at most, stopped early after epoch 5 (patience 3, best at epoch 2)."""
    x, y = _regression_problem()
    net = torch.nn.Linear(8, 1)
    values = iter([5.0, 3.0, 4.0, 4.5, 6.0])
    step = adam_step(net.parameters(), lambda b: (net(b[0]) - b[1]).pow(2).mean(), lr=0.01)
    train_loop(net, step, lambda g: [x, y], context=FitContext(label=label), stage="s",
               epochs=7, batch_size=64, validate=lambda: (next(values), "RMSE", False),
               patience=3)


def test_progress_off_a_terminal_is_plain_lines(monkeypatch, capsys):
    from cdrec import train

    monkeypatch.setattr(train, "PLAIN_PROGRESS_SECONDS", 0.0)  # a line after every epoch
    _stopping_fit()
    err = capsys.readouterr().err  # pytest's captured stderr is not a terminal
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("m s: epoch 1/7 loss=") and "RMSE=5.0000" in lines[0]
    assert [line.split(" loss=")[0] for line in lines] == [
        "m s: epoch 1/7", "m s: epoch 2/7", "m s: epoch 3/7", "m s: epoch 4/7",
        "m s: epoch 5/7"]  # the last is the closing line: the stage stopped at epoch 5
    assert lines[-1].endswith(", done)") and not lines[-2].endswith(", done)")


def test_progress_lines_are_periodic_with_one_at_the_end(capsys):
    _stopping_fit()  # a fit of well under 30 s: no periodic line, only the closing one
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("m s: epoch 5/7 loss=")
    assert "RMSE=6.0000" in lines[0] and lines[0].endswith(", done)")


def test_progress_on_a_terminal_is_tqdms_bar(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    _stopping_fit()
    assert "\r" in screen.getvalue() and "m s:" in screen.getvalue()  # tqdm redraws in place
