"""The one training loop every method uses: a method supplies its loss, not its own loop.

Features: seeded shuffling (same seed, same numbers), large-batch slicing of tensors already on the
device, a progress bar, early stopping on a validation evaluator with the best state restored,
per-epoch history for training-curve plots, and checkpoint/resume per training stage.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cdrec.filenames import safe_name

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


@dataclass
class FitContext:
    """Run-time settings of one fit: where, with which seed, whether to show progress and where
    to checkpoint. Hyper-parameters are not here: they belong to each model's config."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: bool = True
    checkpoint_dir: Path | None = None
    resume: bool = False
    label: str = ""
    history: list[dict[str, float | int | str]] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    # Pretrained bases shared by the fits of one split (``cdrec.models.bases.BaseCache``).
    base_cache: object | None = None
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        # Sampling (shuffles, negatives) happens on the CPU generator; tensors move afterwards.
        self.generator = torch.Generator().manual_seed(self.seed)


def train_loop(
    module: torch.nn.Module,
    loss_fn: LossFn,
    epoch_data: EpochData,
    *,
    context: FitContext,
    stage: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    validate: Callable[[], tuple[float, str, bool]] | None = None,
    patience: int = 5,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    after_step: Callable[[], None] | None = None,
) -> StageResult:
    """Train ``module`` with Adam on minibatches of the tensors ``epoch_data`` returns.

    ``epoch_data(generator)`` is called once per epoch (so negatives can be re-sampled, vectorised)
    and returns aligned tensors; they are shuffled with the context's generator and cut into
    batches of ``batch_size`` rows, each passed to ``loss_fn``. ``validate()`` returns
    ``(value, metric_name, higher_is_better)``; with it, training stops after ``patience`` epochs
    without improvement and the best state is restored. ``after_step`` runs after each optimiser
    step (e.g. projections onto a constraint set).
    """
    if epochs < 1:
        raise ValueError(f"{stage}: epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"{stage}: batch_size must be >= 1, got {batch_size}")
    params = list(parameters) if parameters is not None else [p for p in module.parameters()
                                                               if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    device = context.device
    ckpt = _checkpoint_path(context, stage)

    start_epoch, best_value, best_epoch, bad_epochs = 1, None, 0, 0
    best_state = None
    metric = None
    if ckpt is not None and context.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        context.generator.set_state(state["generator"])
        start_epoch = state["epoch"] + 1
        best_value, best_epoch, bad_epochs = state["best_value"], state["best_epoch"], state["bad"]
        best_state, metric = state["best_state"], state["metric"]
        context.history.extend(state["history"])
        if state["done"]:
            if best_state is not None:
                module.load_state_dict(best_state)
            result = StageResult(stage, state["epoch"], best_epoch, best_value, metric)
            context.stages.append(result)
            return result

    stage_history: list[dict[str, float | int | str]] = [
        h for h in context.history if h.get("stage") == stage and h.get("label") == context.label
    ]
    bar = tqdm(range(start_epoch, epochs + 1), desc=f"{context.label} {stage}".strip(),
               disable=not context.progress, leave=False, dynamic_ncols=True)
    epoch = start_epoch - 1
    done = False
    for epoch in bar:
        module.train()
        t0 = time.perf_counter()
        tensors = [t.to(device) for t in epoch_data(context.generator)]
        n = tensors[0].shape[0]
        order = torch.randperm(n, generator=context.generator).to(device)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn([t[idx] for t in tensors])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{context.label} {stage}: loss became {loss.item()} at epoch {epoch}; "
                    "lower the learning rate or raise the regularisation"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step()
            total += loss.item() * idx.shape[0]
            count += idx.shape[0]
        record: dict[str, float | int | str] = {
            "label": context.label, "stage": stage, "epoch": epoch,
            "train_loss": total / max(count, 1), "seconds": time.perf_counter() - t0,
        }
        if validate is not None:
            module.eval()
            value, metric, higher = validate()
            record[f"val_{metric}"] = value
            improved = best_value is None or (value > best_value if higher else value < best_value)
            if improved and math.isfinite(value):
                best_value, best_epoch, bad_epochs = value, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
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
        if ckpt is not None:
            torch.save({
                "module": module.state_dict(), "optimizer": optimizer.state_dict(),
                "generator": context.generator.get_state(), "epoch": epoch,
                "best_value": best_value, "best_epoch": best_epoch, "bad": bad_epochs,
                "best_state": best_state, "metric": metric, "history": stage_history,
                "done": done,
            }, ckpt)
        if done:
            break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    result = StageResult(stage, epoch, best_epoch, best_value, metric)
    context.stages.append(result)
    return result


def _checkpoint_path(context: FitContext, stage: str) -> Path | None:
    if context.checkpoint_dir is None:
        return None
    context.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    return context.checkpoint_dir / f"{safe_name(stage)}.pt"
