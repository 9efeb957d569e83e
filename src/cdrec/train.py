"""The one training loop every method uses: a method supplies its step, not its own loop.

A *stage* is ``train_loop(module, step, epoch_data, ...)``: each epoch draws its tensors
(``epoch_data(generator)``, so negatives can be re-sampled), shuffles them with the context's
seeded generator and hands minibatches to ``step``. A step performs the updates of one batch and
returns its losses by name:

* :class:`OptimizerStep` with one :class:`Update` is the common case (one Adam optimiser on one
  loss; :func:`adam_step` builds it);
* several ``Update``s step in turn on every batch (an adversarial method's discriminator, then
  its generator, each with its own optimiser);
* any object with ``__call__``, ``state_dict`` and ``load_state_dict`` is a step too (a
  federated round that aggregates device updates).

Around every step the loop keeps: early stopping on a validation callback with the best state
restored, a progress bar, per-epoch history (one ``train_<name>`` column per loss), and a
checkpoint per stage and epoch holding the module, every optimiser of the step and every RNG
state (the context generator, torch's global CPU generator, CUDA's), so an interrupted fit
resumes to the same numbers. :func:`run_schedule` runs several stages in rounds (a dual loop
that alternates stages until a tolerance), each round's stages checkpointed under their own names.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import numpy as np
import torch
from tqdm.auto import tqdm

from cdrec.distributed import (
    agree,
    all_reduce_gradients,
    broadcast_state,
    check_same,
    shard,
    world_size,
)
from cdrec.filenames import safe_name
from cdrec.nn.sparse import LazyAdam

if TYPE_CHECKING:  # type-only: the cache lives with the bases, which import this module
    from cdrec.models.bases.cache import BaseCache

EpochData = Callable[[torch.Generator], Sequence[torch.Tensor]]
LossFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]
# ``validate()`` -> (value of the validation metric, its name, whether higher is better)
Validate = Callable[[], tuple[float, str, bool]]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; model code additionally draws from ``FitContext.generator``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA without it is an error, not a fallback."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return device


@dataclass
class StageResult:
    """What a training stage ended with: epochs run, the chosen (best) epoch and its metric."""

    stage: str
    epochs_run: int
    best_epoch: int
    best_value: float | None
    metric: str | None
    # Mean training loss (summed over the step's losses) of the stage's last epoch.
    train_loss: float | None = None


@dataclass
class FitContext:
    """Run-time settings of one fit: where, with which seed, whether to show progress and where
    to checkpoint. Hyper-parameters are not here: they belong to each model's config."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: bool = True
    checkpoint_dir: Path | None = None
    # Epochs between checkpoints of a stage (its last epoch is always written); a resumed stage
    # replays the epochs after its last checkpoint, to the same numbers.
    checkpoint_every: int = 1
    # ... and at least this many seconds apart (0: every ``checkpoint_every`` epochs): on
    # small data a checkpoint can cost more than the epoch it saves.
    checkpoint_seconds: float = 0.0
    resume: bool = False
    label: str = ""
    history: list[dict[str, float | int | str]] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    # Pretrained bases shared by the fits of one split.
    base_cache: BaseCache | None = None
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.checkpoint_seconds < 0:
            raise ValueError(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds}")
        # Sampling (shuffles, negatives) happens on the CPU generator; tensors move afterwards.
        self.generator = torch.Generator().manual_seed(self.seed)


class Step(Protocol):
    """The updates of one minibatch. Returns each loss of the batch (detached, 0-d) by name;
    ``state_dict``/``load_state_dict`` carry every optimiser's state for checkpoints."""

    def __call__(self, batch: Sequence[torch.Tensor]) -> Mapping[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Update:
    """One loss and the optimiser(s) that step on it: ``loss(batch)``, backward, ``step()`` of
    each optimiser (several when parameter groups need different ones, e.g. ``LazyAdam`` for
    embedding rows with sparse gradients and ``Adam`` for the rest), then ``after_step()``
    under ``no_grad`` (e.g. a projection onto a constraint set)."""

    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]
    loss: LossFn
    name: str = "loss"
    after_step: Callable[[], None] | None = None

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        if isinstance(self.optimizer, torch.optim.Optimizer):
            return [self.optimizer]
        return list(self.optimizer)


class OptimizerStep:
    """A step made of one or several :class:`Update`s, applied in order to every batch."""

    def __init__(self, updates: Sequence[Update]) -> None:
        if not updates:
            raise ValueError("a step needs at least one update")
        names = [u.name for u in updates]
        if len(set(names)) != len(names):
            raise ValueError(f"update names must differ, got {names}")
        self.updates = list(updates)
        # Per update, its parameters with dense and with sparse gradients (for the sums
        # across processes), fixed with the optimisers.
        self._parameters = [_dense_and_sparse(u.optimizers) for u in self.updates]

    def __call__(self, batch: Sequence[torch.Tensor], share: float | None = None
                 ) -> dict[str, torch.Tensor]:
        """Apply every update to ``batch``. With ``share`` (a distributed job's
        ``train_loop``), ``batch`` is this process's shard of the global batch and ``share``
        its fraction of the rows: the gradients (and the returned losses) are summed across
        processes into the whole batch's (``cdrec.distributed``). Without it, no process
        talks to another."""
        losses = {}
        for update, (dense, rows) in zip(self.updates, self._parameters, strict=True):
            optimizers = update.optimizers
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            if share is None or share > 0:
                loss = update.loss(batch)
                if share is None and not torch.isfinite(loss):
                    raise FloatingPointError(f"{update.name} became {loss.item()}")
                loss.backward()
            else:  # an empty shard (a last batch smaller than the process count)
                loss = torch.zeros((), device=(dense or rows)[0].device)
            if share is not None:
                loss = all_reduce_gradients(dense, rows, share, loss.detach())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{update.name} became {loss.item()}")
            for optimizer in optimizers:
                optimizer.step()
            if update.after_step is not None:
                with torch.no_grad():
                    update.after_step()
            losses[update.name] = loss.detach()
        return losses

    def state_dict(self) -> dict[str, Any]:
        return {u.name: [o.state_dict() for o in u.optimizers] for u in self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for update in self.updates:
            for optimizer, saved in zip(update.optimizers, state[update.name], strict=True):
                optimizer.load_state_dict(saved)


def _dense_and_sparse(optimizers: Sequence[torch.optim.Optimizer]
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The parameters of ``optimizers`` with dense gradients, and those with sparse ones (the
    embedding rows ``LazyAdam`` steps)."""
    dense: list[torch.Tensor] = []
    rows: list[torch.Tensor] = []
    for optimizer in optimizers:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        (rows if isinstance(optimizer, LazyAdam) else dense).extend(params)
    return dense, rows


def adam_step(parameters: Sequence[torch.nn.Parameter], loss: LossFn, *, lr: float,
              weight_decay: float = 0.0, after_step: Callable[[], None] | None = None,
              sparse: Sequence[torch.Tensor] = ()) -> OptimizerStep:
    """The common step: Adam on ``parameters`` minimising ``loss``.

    Parameters also listed in ``sparse`` receive sparse gradients (embedding rows) and step
    with :class:`cdrec.nn.sparse.LazyAdam`: Adam's formula on the rows of the batch only. It
    matches dense Adam when every row is in every batch; otherwise a row's moments decay only
    on the steps that touch it. It has no weight decay: the bases regularise the rows a batch
    touches in their loss instead.
    """
    params = list(parameters)
    if not params:
        raise ValueError("no trainable parameters to optimise")
    sparse_ids = {id(p) for p in sparse}
    rows = [p for p in params if id(p) in sparse_ids]
    dense = [p for p in params if id(p) not in sparse_ids]
    if rows and weight_decay:
        raise ValueError("weight_decay does not apply to sparse embedding rows (LazyAdam); "
                         "regularise the rows in the loss, or train densely")
    optimizers: list[torch.optim.Optimizer] = []
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))
    if rows:
        optimizers.append(LazyAdam(rows, lr=lr))
    return OptimizerStep([Update(optimizers, loss, after_step=after_step)])


def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``module`` that require gradients."""
    return [p for p in module.parameters() if p.requires_grad]


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's global RNG states that model code may draw from (init, dropout)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def changing_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the part of ``module``'s state a stage can change: the parameters that require
    gradients and every buffer. Frozen parameters (the pretrained bases of a mapping stage)
    are left out, so best-state snapshots and checkpoints cost the stage, not the model."""
    return {name: value.detach().clone()
            for name, value in module.state_dict(keep_vars=True).items()
            if not isinstance(value, torch.nn.Parameter) or value.requires_grad}


def load_changing_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back a :func:`changing_state` snapshot (the frozen parameters are as they were)."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    result = module.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - frozen)
    if result.unexpected_keys or missing:
        raise KeyError(f"snapshot does not fit the module: unexpected "
                       f"{result.unexpected_keys[:5]}, missing trainable {missing[:5]}")


class _FrozenGuard:
    """Snapshots and checkpoints leave frozen parameters out, so a stage must not change them:
    this records their versions (``Tensor._version`` counts in-place writes) and checks."""

    def __init__(self, module: torch.nn.Module, stage: str) -> None:
        self.stage = stage
        self.frozen = {name: p for name, p in module.named_parameters() if not p.requires_grad}
        self.versions = {name: p._version for name, p in self.frozen.items()}

    def check(self) -> None:
        changed = [name for name, p in self.frozen.items() if p._version != self.versions[name]]
        if changed:
            raise RuntimeError(
                f"stage {self.stage} wrote to frozen parameters {changed[:5]}; a stage's "
                "snapshots and checkpoints hold only parameters that require gradients, so "
                "let them require gradients (and leave them out of the optimiser) instead")


def train_loop(
    module: torch.nn.Module,
    step: Step,
    epoch_data: EpochData,
    *,
    context: FitContext,
    stage: str,
    epochs: int,
    batch_size: int,
    validate: Validate | None = None,
    patience: int = 5,
) -> StageResult:
    """Run one stage: ``epochs`` passes of ``step`` over minibatches of ``epoch_data``.

    ``epoch_data(generator)`` is called once per epoch and returns aligned tensors; they are
    shuffled with the context's generator and cut into batches of ``batch_size`` rows.
    ``validate()`` returns ``(value, metric_name, higher_is_better)``; with it, training stops
    after ``patience`` epochs without improvement and the best state of ``module`` is restored.
    With ``context.checkpoint_dir`` the stage is checkpointed (every
    ``context.checkpoint_every`` epochs and at its end) and, with
    ``context.resume``, continues from its checkpoint (a finished stage is only reloaded).
    """
    if epochs < 1:
        raise ValueError(f"{stage}: epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"{stage}: batch_size must be >= 1, got {batch_size}")
    device = context.device
    ckpt = _checkpoint_path(context, stage)

    start_epoch, best_value, best_epoch, bad_epochs = 1, None, 0, 0
    best_state = None
    metric = None
    finished = False
    if ckpt is not None and context.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        load_changing_state(module, state["module"])
        step.load_state_dict(state["step"])
        context.generator.set_state(state["generator"].cpu())
        set_rng_state(state["rng"])
        start_epoch = state["epoch"] + 1
        best_value, best_epoch, bad_epochs = state["best_value"], state["best_epoch"], state["bad"]
        best_state, metric = state["best_state"], state["metric"]
        context.history.extend(state["history"])
        finished = bool(state["done"])
    # Every process resumes from the same point, or all of them stop here with an error.
    check_same(2 * start_epoch + finished,
               f"where stage {context.label} {stage} resumes (2 x epoch + finished)")
    if finished:
        if best_state is not None:
            load_changing_state(module, best_state)
        module.eval()
        result = StageResult(stage, start_epoch - 1, best_epoch, best_value, metric,
                             _last_train_loss(state["history"]))
        context.stages.append(result)
        return result

    guard = _FrozenGuard(module, stage)
    # Across processes an OptimizerStep takes one shard of each batch; any other step runs
    # every batch in every process (replicated, the same numbers everywhere).
    sharded_step = step if world_size() > 1 and isinstance(step, OptimizerStep) else None
    stage_history: list[dict[str, float | int | str]] = [
        h for h in context.history if h.get("stage") == stage and h.get("label") == context.label
    ]
    bar = progress_bar(range(start_epoch, epochs + 1), f"{context.label} {stage}".strip(),
                       context.progress)
    epoch = start_epoch - 1
    done = False
    last_saved = time.perf_counter()
    for epoch in bar:
        module.train()
        t0 = time.perf_counter()
        tensors = [t.to(device) for t in epoch_data(context.generator)]
        n = tensors[0].shape[0]
        order = torch.randperm(n, generator=context.generator).to(device)
        totals: dict[str, float] = {}
        count = 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            losses: Mapping[str, torch.Tensor]
            try:
                if sharded_step is not None:
                    local = shard(idx)
                    losses = sharded_step([t[local] for t in tensors],
                                          share=local.numel() / idx.numel())
                else:
                    losses = step([t[idx] for t in tensors])
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"{context.label} {stage}: {err} at epoch {epoch}; "
                    "lower the learning rate or raise the regularisation") from None
            for name, batch_loss in losses.items():
                totals[name] = totals.get(name, 0.0) + batch_loss.item() * idx.shape[0]
            count += idx.shape[0]
        means = {name: total / max(count, 1) for name, total in totals.items()}
        record: dict[str, float | int | str] = {
            "label": context.label, "stage": stage, "epoch": epoch,
            "train_loss": sum(means.values()), "seconds": time.perf_counter() - t0,
        }
        if len(means) > 1:
            record.update({f"train_{name}": value for name, value in means.items()})
        if validate is not None:
            module.eval()
            value, metric, higher = validate()
            value = agree(value)  # process 0's score decides in every process
            record[f"val_{metric}"] = value
            improved = best_value is None or (value > best_value if higher else value < best_value)
            if improved and math.isfinite(value):
                best_value, best_epoch, bad_epochs = value, epoch, 0
                best_state = changing_state(module)
            else:
                bad_epochs += 1
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", **{metric: f"{value:.4f}"})
            done = bad_epochs >= patience
        else:
            best_epoch = epoch
            bar.set_postfix(loss=f"{record['train_loss']:.4f}")
        stage_history.append(record)
        context.history.append(record)
        done = done or epoch == epochs
        guard.check()
        due = bool(agree(float(epoch % context.checkpoint_every == 0
                               and time.perf_counter() - last_saved
                               >= context.checkpoint_seconds)))
        if ckpt is not None and (done or due):
            last_saved = time.perf_counter()
            _atomic_save({
                "module": changing_state(module), "step": step.state_dict(),
                "generator": context.generator.get_state(), "rng": rng_state(device),
                "epoch": epoch, "best_value": best_value, "best_epoch": best_epoch,
                "bad": bad_epochs, "best_state": best_state, "metric": metric,
                "history": stage_history, "done": done,
            }, ckpt)
        if done:
            break
    bar.close()
    if best_state is not None:
        load_changing_state(module, best_state)
    broadcast_state(module)
    module.eval()
    result = StageResult(stage, epoch, best_epoch, best_value, metric,
                         _last_train_loss(stage_history))
    context.stages.append(result)
    return result


# Seconds between the plain progress lines written when stderr is not a terminal (a log file,
# a pipe, CI): there tqdm's carriage-return redraws pile up into one unreadable line.
PLAIN_PROGRESS_SECONDS = 30.0


class ProgressBar(Protocol):
    """What the loop needs of a progress display (tqdm's names)."""

    def __iter__(self) -> Iterator[int]: ...

    def set_postfix(self, **values: Any) -> None: ...

    def close(self) -> None: ...


def progress_bar(epochs: range, desc: str, enabled: bool) -> ProgressBar:
    """tqdm's bar on a terminal (or in a notebook, or when disabled); elsewhere plain lines."""
    stream = sys.stderr
    if enabled and not _is_terminal(stream) and not _in_notebook():
        return PlainProgress(epochs, desc, stream, PLAIN_PROGRESS_SECONDS)
    bar: ProgressBar = tqdm(epochs, desc=desc, disable=not enabled, leave=False,
                            dynamic_ncols=True)
    return bar


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    # tqdm.auto draws a widget in Jupyter, whose stderr is no terminal either: keep it there.
    from tqdm import autonotebook, std

    return autonotebook.tqdm is not std.tqdm


class PlainProgress:
    """Progress for logs: a line ``<desc>: epoch 12/500 loss=0.1234 RMSE=0.8765 (41 s)`` at most
    every ``interval`` seconds, and one when the stage ends (``..., done)``); newlines only, no
    carriage returns."""

    def __init__(self, epochs: range, desc: str, stream: TextIO, interval: float) -> None:
        self.epochs, self.desc, self.stream, self.interval = epochs, desc, stream, interval
        self.postfix: dict[str, Any] = {}
        self.epoch: int | None = None  # the epoch handed out last
        self.start = self.last = time.perf_counter()

    def __iter__(self) -> Iterator[int]:
        for epoch in self.epochs:
            self.epoch = epoch
            yield epoch  # the loop body runs here; a break (early stop) never comes back
            if time.perf_counter() - self.last >= self.interval:
                self._write(done=False)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        # Called after the loop: the last epoch handed out has run, whether it ended the range
        # or stopped the stage early.
        if self.epoch is not None:
            self._write(done=True)

    def _write(self, *, done: bool) -> None:
        self.last = time.perf_counter()
        last = self.epochs[-1] if len(self.epochs) else self.epoch
        values = "".join(f" {key}={value}" for key, value in self.postfix.items())
        head = f"{self.desc}:" if self.desc else "training:"
        end = ", done" if done else ""
        self.stream.write(f"{head} epoch {self.epoch}/{last}{values} "
                          f"({self.last - self.start:.0f} s{end})\n")
        self.stream.flush()


StageFn = Callable[[str], StageResult]


def _last_train_loss(history: Sequence[Mapping[str, float | int | str]]) -> float | None:
    return float(history[-1]["train_loss"]) if history else None


def round_loss(results: Sequence[StageResult]) -> float:
    """The training loss of one round of a schedule: its stages' last-epoch losses summed."""
    return sum(r.train_loss for r in results if r.train_loss is not None)


def run_schedule(stages: Sequence[tuple[str, StageFn]], *, rounds: int,
                 converged: Callable[[list[StageResult]], bool] | None = None,
                 tolerance: float | None = None,
                 module: torch.nn.Module | None = None,
                 validate: Validate | None = None,
                 patience: int | None = None,
                 context: FitContext | None = None,
                 name: str = "schedule") -> list[StageResult]:
    """Run named stages in order, for up to ``rounds`` rounds (a dual loop: train one side, then
    the other, and again), stopping early once the round has converged.

    Each stage function receives its stage name, ``"<name>@<round>"``, and must pass it to
    ``train_loop``: every round of every stage then has its own checkpoint, so a resumed
    schedule reloads the finished rounds and continues inside the interrupted one.

    A round has converged when ``converged(results of the round)`` is true, or, with
    ``tolerance``, when its training loss (:func:`round_loss`) changed by less than
    ``tolerance`` from the previous round's (DML's stopping rule). With ``validate`` (and the
    ``module`` it judges), every round ends with a validation score; the best round's state of
    ``module`` is restored at the end, the schedule also stops after ``patience`` rounds without
    a better score, and a summary :class:`StageResult` named ``name`` (``best_epoch`` = the
    chosen round) closes the returned list (and ``context.stages``, with one history row per
    round). Finished rounds reloaded on resume are validated again, to the same scores.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = [stage for stage, _ in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must differ, got {names}")
    if tolerance is not None and tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if validate is not None and module is None:
        raise ValueError("run_schedule: validate needs the module whose best round to keep")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    results: list[StageResult] = []
    previous_loss: float | None = None
    best_value: float | None = None
    best_round, bad_rounds, metric, done_rounds, stopped = 0, 0, None, 0, False
    best_state: dict[str, torch.Tensor] | None = None
    saved_rows: list[dict[str, float | int | str]] = []
    # The schedule's own checkpoint: its per-round rows and selection state, written after
    # every round, so a resumed schedule neither re-validates nor re-records finished rounds.
    ckpt = _checkpoint_path(context, name) if context is not None else None
    if ckpt is not None and context is not None and context.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location=context.device, weights_only=True)
        done_rounds, saved_rows, stopped = saved["round"], saved["rows"], saved["stopped"]
        best_value, best_round, bad_rounds = saved["best_value"], saved["best_round"], saved["bad"]
        best_state, metric, previous_loss = saved["best_state"], saved["metric"], saved["loss"]
    r = 0
    for r in range(1, rounds + 1):
        round_results = [fn(f"{stage}@{r}") for stage, fn in stages]
        results.extend(round_results)
        if r <= done_rounds:  # reloaded from the stages' checkpoints: its row was saved
            if context is not None and r <= len(saved_rows):
                context.history.extend([saved_rows[r - 1]])
            if r == done_rounds and stopped:
                break
            continue
        loss = round_loss(round_results)
        stop = converged is not None and converged(round_results)
        if tolerance is not None and previous_loss is not None:
            stop = stop or abs(previous_loss - loss) < tolerance
        previous_loss = loss
        row: dict[str, float | int | str] = {"stage": name, "epoch": r, "train_loss": loss}
        if validate is not None and module is not None:
            module.eval()
            value, metric, higher = validate()
            value = agree(value)
            if best_value is None or (value > best_value if higher else value < best_value):
                best_value, best_round, bad_rounds = value, r, 0
                best_state = changing_state(module)
            else:
                bad_rounds += 1
            stop = stop or (patience is not None and bad_rounds >= patience)
            row[f"val_{metric}"] = value
        if context is not None:
            row["label"] = context.label
            context.history.append(row)
            saved_rows.append(row)
        if ckpt is not None:
            _atomic_save({"round": r, "rows": saved_rows, "stopped": stop,
                          "best_value": best_value, "best_round": best_round, "bad": bad_rounds,
                          "best_state": best_state, "metric": metric, "loss": previous_loss},
                         ckpt)
        if stop:
            break
    if validate is not None and module is not None:
        if best_state is not None:
            load_changing_state(module, best_state)
        module.eval()
        summary = StageResult(name, r, best_round, best_value, metric, previous_loss)
        results.append(summary)
        if context is not None:
            context.stages.append(summary)
    return results


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash mid-write leaves the previous
    checkpoint, never a truncated one that ``--resume`` would fail on."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _checkpoint_path(context: FitContext, stage: str) -> Path | None:
    if context.checkpoint_dir is None:
        return None
    context.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    return context.checkpoint_dir / f"{safe_name(stage)}.pt"
