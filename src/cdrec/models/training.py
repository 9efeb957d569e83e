"""Training settings every trained model shares, declared once, and the helper that runs one
stage of a model with them (``cdrec.train`` does the looping).

A method's config inherits :class:`TrainingConfig` and sets only its paper's values, so the
fields, their bounds and their descriptions are written here and nowhere else::

    class EMCDRConfig(TransferConfig, TrainingConfig):
        training_defaults = {"epochs": 500, "batch_size": 256, "lr": 0.005, "patience": 20}
        mapping: Literal["linear", "mlp"] = "mlp"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import Field, model_validator
from torch import nn

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
    patience of early stopping on validation. A method's config inherits it and gives its
    paper's values in ``training_defaults``; the fields and their bounds live only here."""

    training_defaults: ClassVar[dict[str, Any]] = {}

    epochs: int = Field(100, ge=1, description="maximum passes over the stage's training data")
    batch_size: int = Field(256, ge=1, description="rows per optimiser step")
    lr: float = Field(0.005, gt=0, description="Adam step size")
    weight_decay: float = Field(0.0, ge=0, description="Adam's L2 weight decay")
    patience: int = Field(10, ge=1, description=(
        "epochs without a better validation value before stopping (best epoch restored)"))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.training_defaults) - set(TrainingConfig.__annotations__) - {
            "training_defaults"}
        if unknown:
            raise TypeError(f"{cls.__name__}.training_defaults: {sorted(unknown)} are not "
                            "training settings")

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        # The method's own defaults fill what the caller left out (then the bounds apply).
        if isinstance(data, dict) and cls.training_defaults:
            return {**cls.training_defaults, **data}
        return data


@runtime_checkable
class HasSparseRows(Protocol):
    """A module some of whose parameters get sparse gradients (e.g. a base trained with
    ``sparse: true``): they step with a row-wise Adam."""

    def sparse_rows(self) -> list[torch.Tensor]: ...


def sparse_parameters(module: nn.Module) -> list[torch.Tensor]:
    """Parameters of ``module`` that receive sparse gradients: ``nn.Embedding(sparse=True)``
    tables and whatever submodules declare through ``sparse_rows()``."""
    found: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        if isinstance(sub, nn.Embedding) and sub.sparse and sub.weight.requires_grad:
            found[id(sub.weight)] = sub.weight
        if isinstance(sub, HasSparseRows):
            found.update((id(p), p) for p in sub.sparse_rows())
    return list(found.values())


def fit_stage(module: torch.nn.Module, loss: LossFn, epoch_data: EpochData,
              settings: TrainingConfig, *, context: FitContext, stage: str,
              validate: Validate | None = None,
              parameters: Sequence[torch.nn.Parameter] | None = None,
              after_step: Callable[[], None] | None = None) -> StageResult:
    """Train ``parameters`` (default: every trainable parameter of ``module``) with Adam on
    ``loss`` for one stage, as ``settings`` say; early-stop on ``validate``. Parameters with
    sparse gradients (:func:`sparse_parameters`) step with a row-wise Adam."""
    step = adam_step(parameters if parameters is not None else trainable(module), loss,
                     lr=settings.lr, weight_decay=settings.weight_decay, after_step=after_step,
                     sparse=sparse_parameters(module))
    return train_loop(module, step, epoch_data, context=context, stage=stage,
                      epochs=settings.epochs, batch_size=settings.batch_size,
                      validate=validate, patience=settings.patience)
