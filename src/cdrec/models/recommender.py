"""The ``Recommender`` interface every method implements (the registry that names them is
``cdrec.models.registry``).

Style: a constructor stores validated hyper-parameters (a pydantic model whose defaults are the
paper's), ``fit`` learns and leaves learned state on the module, ``predict`` scores
(user, item) pairs of one domain. Multi-stage methods compose smaller models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recommender(nn.Module, ABC):
    """Base class: subclasses set ``Config`` and ``supports`` and implement ``_fit``/``predict``."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    supports: ClassVar[frozenset[str]] = frozenset()
    # A non-personalised model: the result tables mark every model against the best floor.
    is_floor: ClassVar[bool] = False
    registered_name: ClassVar[str] = ""

    def __init__(self, **params: object) -> None:
        super().__init__()
        self.config = self.Config(**params)
        self.fitted_ = False
        self._fitting = False

    def fit(self, train: TrainView, validation: Evaluator | None = None,
            context: FitContext | None = None) -> Self:
        """Learn from ``train``; early-stop on ``validation`` where the method trains by epochs."""
        if train.scenario not in self.supports:
            raise ValueError(
                f"{type(self).__name__} does not support scenario {train.scenario!r}; "
                f"it supports {sorted(self.supports)}"
            )
        context = context or FitContext()
        self._fitting = True  # lets validation call predict between epochs
        try:
            self._fit(train, validation, context)
        finally:
            self._fitting = False
        self.fitted_ = True
        self.eval()
        return self

    @abstractmethod
    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        """Each model's own fitting (stages run with ``cdrec.train``)."""

    @abstractmethod
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted rating (explicit) or score (implicit) for each (user, item) pair."""

    def check_fitted(self) -> None:
        if not (self.fitted_ or self._fitting):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train) first")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")


def validator(model: Recommender, evaluator: Evaluator | None
              ) -> Callable[[], tuple[float, str, bool]] | None:
    """The ``validate`` callback of ``train_loop``: the evaluator's main metric on ``model``."""
    if evaluator is None:
        return None

    def validate() -> tuple[float, str, bool]:
        metric = evaluator.main_metric
        return evaluator.evaluate(model)[metric], metric, evaluator.higher_is_better

    return validate


def choose_on_validation(model: Recommender, name: str, grid: Sequence[float],
                         apply: Callable[[float], None], validation: Evaluator
                         ) -> dict[str, float]:
    """Model selection without epochs: ``apply`` each value of ``grid`` to ``model``, score it
    on ``validation`` (never the test cases), and leave the best applied. Returns what the
    runner records: ``{name: best value, "validation_<metric>": its score}``."""
    metric = validation.main_metric
    scores = []
    for value in grid:
        apply(value)
        scores.append(validation.evaluate(model)[metric])
    pick = max if validation.higher_is_better else min
    best = scores.index(pick(scores))
    apply(grid[best])
    return {name: float(grid[best]), f"validation_{metric}": scores[best]}


def validation_for(evaluator: Evaluator | None, domain: str) -> Evaluator | None:
    """The part of ``evaluator`` that judges ``domain`` alone: itself if it is that domain's,
    that domain's part of a multi-domain evaluator, else ``None``."""
    return evaluator.for_domain(domain) if evaluator is not None else None
