"""The ``Recommender`` interface every method implements, and the registry that names them.

Style: a constructor stores validated hyper-parameters (a pydantic model whose defaults are the
paper's), ``fit`` learns and leaves learned state on the module, ``predict`` scores
(user, item) pairs of one domain. Multi-stage methods compose smaller models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Self, TypeVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from cdrec.scenarios.base import Evaluator, TrainView
from cdrec.train import FitContext


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recommender(nn.Module):
    """Base class: subclasses set ``Config`` and ``supports`` and implement ``_fit``/``predict``."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    supports: ClassVar[frozenset[str]] = frozenset()
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

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        raise NotImplementedError  # abstract: each model implements its own fitting

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted rating (explicit) or score (implicit) for each (user, item) pair."""
        raise NotImplementedError  # abstract

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


def validation_for(evaluator: Evaluator | None, domain: str) -> Evaluator | None:
    """The part of ``evaluator`` that judges ``domain`` alone: itself if it is that domain's,
    that domain's part of a multi-domain evaluator, else ``None``."""
    if evaluator is None:
        return None
    if getattr(evaluator, "domain", None) == domain:
        return evaluator
    for_domain = getattr(evaluator, "for_domain", None)
    return for_domain(domain) if for_domain is not None else None


_REGISTRY: dict[str, type[Recommender]] = {}
R = TypeVar("R", bound=type[Recommender])


def register(name: str):
    """Class decorator: make a model buildable by name from configs and the CLI."""

    def deco(cls: R) -> R:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name]}")
        cls.registered_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def register_variants(cls: type[Recommender], prefix: str, bases: list[str],
                      defaults: dict[str, object] | None = None) -> None:
    """Register ``<prefix>_<base>`` for each base: subclasses of ``cls`` whose ``base`` (and any
    other ``defaults``) are preset, e.g. EMCDR_MF, EMCDR_BPR, TMCDR_CML."""
    for base in bases:
        preset = {**(defaults or {}), "base": base}
        doc = f"{prefix} over the {base} base" + (f" ({defaults})" if defaults else "") + "."
        sub = type(f"{cls.__name__}_{base}", (cls,), {
            "variant_defaults": {**getattr(cls, "variant_defaults", {}), **preset},
            "__doc__": doc, "__module__": cls.__module__})
        register(f"{prefix}_{base}")(sub)


def available_models() -> dict[str, type[Recommender]]:
    import cdrec.models  # noqa: F401  (importing the package registers every model)

    return dict(sorted(_REGISTRY.items()))


def build_model(name: str, **params: object) -> Recommender:
    models = available_models()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(models)}")
    return models[name](**params)
