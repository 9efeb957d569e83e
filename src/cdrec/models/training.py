"""Training settings every trained model shares, declared once, and the helper that runs one
stage of a model with them (``cdrec.train`` does the looping).

A method's config inherits :class:`TrainingConfig` through :func:`training_defaults`, which
only changes the defaults (its paper's), so the fields, their bounds and their descriptions
are written here and nowhere else::

    class EMCDRConfig(TransferConfig, training_defaults(epochs=500, batch_size=256, lr=0.005,
                                                         patience=20)):
        mapping: Literal["linear", "mlp"] = "mlp"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Annotated, Any

import torch
from pydantic import Field, create_model

from cdrec.models.recommender import ModelConfig
from cdrec.train import (
    EpochData,
    FitContext,
    LossFn,
    StageResult,
    Validate,
    adam_step,
    train_loop,
    trainable,
)


class TrainingConfig(ModelConfig):
    """How one stage trains: Adam's step size and weight decay, epochs, batch size, and the
    patience of early stopping on validation."""

    epochs: int = Field(100, ge=1, description="maximum passes over the stage's training data")
    batch_size: int = Field(256, ge=1, description="rows per optimiser step")
    lr: float = Field(0.005, gt=0, description="Adam step size")
    weight_decay: float = Field(0.0, ge=0, description="Adam's L2 weight decay")
    patience: int = Field(10, ge=1, description=(
        "epochs without a better validation value before stopping (best epoch restored)"))


def training_defaults(**defaults: Any) -> type[TrainingConfig]:
    """:class:`TrainingConfig` with other defaults (a method's paper's), same fields and bounds."""
    return _with_defaults(tuple(sorted(defaults.items())))


@cache  # one class per set of defaults, so equal defaults give the same base class
def _with_defaults(defaults: tuple[tuple[str, Any], ...]) -> type[TrainingConfig]:
    fields: dict[str, Any] = {}
    for key, value in defaults:
        if key not in TrainingConfig.model_fields:
            raise TypeError(f"{key!r} is not a training setting; they are "
                            f"{', '.join(TrainingConfig.model_fields)}")
        info = TrainingConfig.model_fields[key]
        fields[key] = (Annotated[info.annotation, *info.metadata],  # type: ignore[name-defined]
                       Field(value, description=info.description))
    name = "Training_" + "_".join(f"{k}{v}" for k, v in defaults)
    model: type[TrainingConfig] = create_model(name, __base__=TrainingConfig, **fields)
    return model


def fit_stage(module: torch.nn.Module, loss: LossFn, epoch_data: EpochData,
              settings: TrainingConfig, *, context: FitContext, stage: str,
              validate: Validate | None = None,
              parameters: Sequence[torch.nn.Parameter] | None = None,
              after_step: Callable[[], None] | None = None) -> StageResult:
    """Train ``parameters`` (default: every trainable parameter of ``module``) with Adam on
    ``loss`` for one stage, as ``settings`` say; early-stop on ``validate``."""
    step = adam_step(parameters if parameters is not None else trainable(module), loss,
                     lr=settings.lr, weight_decay=settings.weight_decay, after_step=after_step)
    return train_loop(module, step, epoch_data, context=context, stage=stage,
                      epochs=settings.epochs, batch_size=settings.batch_size,
                      validate=validate, patience=settings.patience)
