"""The ``Recommender`` interface every method implements (the registry that names them is
``cdrec.models.registry``).

Style: a constructor stores validated hyper-parameters (a pydantic model whose defaults are the
paper's), ``fit`` learns and leaves learned state on the module, ``predict`` scores
(user, item) pairs of one domain. Multi-stage methods compose smaller models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from cdrec.models.model_file import save_model
from cdrec.models.serving import (
    NewHistory,
    TrainedOn,
    as_frame,
    new_history,
    score_all_items,
    top_k,
    user_blocks,
)
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
    # Learned attributes (``name_``) that a saved model leaves out: diagnostics of the fit that
    # predictions do not use and that are not plain data (see ``cdrec.models.persist``).
    transient_attributes: ClassVar[frozenset[str]] = frozenset()

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
        self.trained_on_ = TrainedOn.of(train)
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

    # -- saving and loading (``cdrec.models.persist``) -----------------------------------------

    @abstractmethod
    def architecture(self) -> dict[str, Any]:
        """What rebuilds this fitted model's modules untrained (sizes, the bases' settings), as
        plain data: saved with the state so that ``_build`` can make a module it loads into
        (docs/adding_a_method.md)."""

    @abstractmethod
    def _build(self, architecture: Mapping[str, Any]) -> None:
        """Create the (untrained) learned modules and buffers ``architecture`` describes."""

    def save(self, path: str | Path, *, include_seen: bool = True) -> Path:
        """Write the fitted model to one file: name, config, state, original ids and (unless
        ``include_seen=False``) the training (user, item) pairs that ``recommend`` leaves out.
        Read it back with ``cdrec.load``."""
        return save_model(self, path, include_seen=include_seen)

    # -- recommending ----------------------------------------------------------------------

    def _trained_on(self) -> TrainedOn:
        self.check_fitted()
        trained_on: TrainedOn | None = getattr(self, "trained_on_", None)
        if trained_on is None:
            raise RuntimeError(f"{type(self).__name__} was fitted before it kept its training "
                               "ids; refit it")
        return trained_on

    @torch.no_grad()
    def recommend(self, domain: str, users: Sequence[Any] | np.ndarray, k: int = 10, *,
                  exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items of ``domain`` for each of ``users`` (original ids), as a table
        ``user, rank, item, score`` by original ids; items a user has in that domain's training
        data are left out unless ``exclude_seen=False``. Batched over users."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        ids = self._trained_on()
        item_ids = ids.domain(domain)
        index = ids.users(users)
        frames = []
        for block in user_blocks(index.numel(), len(item_ids)):
            chunk = index[block]
            scores = self.score_users(domain, chunk.to(self.device), len(item_ids)).cpu()
            seen = ids.seen_pairs(domain, chunk) if exclude_seen else None
            values, items = top_k(scores, k, seen)
            frames.append(as_frame(ids.user_ids[chunk.numpy()], values, items, item_ids))
        return pd.concat(frames, ignore_index=True)

    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """Scores ``[U, n_items]`` of items ``0..n_items-1`` of ``domain`` for ``users``: by
        default ``predict`` over every pair; models with user states override it with one
        state per user and a matrix product (``EmbeddingBase.score_items``)."""
        return score_all_items(self, domain, users, n_items)

    def score_new_users(self, history: NewHistory, target: str, items: torch.Tensor
                        ) -> torch.Tensor:
        """Scores ``[history.n, len(items)]`` of ``items`` of ``target`` for new users known by
        their source history only. Methods that can map a new user override this."""
        raise ValueError(
            f"{type(self).__name__} cannot recommend for a new user from a source history: it "
            "has no way to map a user it was not trained on into the target domain. Transfer "
            "methods can (EMCDR, TMCDR, PTUPCDR, SSCDR, DCDCSR, CST), and so can the floors "
            "and TGT, whose cold-user predictions ignore the history")

    @torch.no_grad()
    def recommend_from_history(self, history: pd.DataFrame | Mapping[Any, float],
                               k: int = 10, *, unknown: str = "warn") -> pd.DataFrame:
        """Top-``k`` target-domain items for new users given their source-domain history: the
        cold-start case. ``history`` is a table with columns ``item`` (original source item
        ids), optional ``rating``, optional ``timestamp`` (numbers; PTUPCDR keeps a user's most
        recent items) and optional ``user`` (any label, one list per label), or a
        mapping ``{item: rating}`` for one user. Item ids the source domain does not have are
        reported (``unknown="warn"``: a warning naming them; ``"error"``: a ``KeyError``)."""
        ids = self._trained_on()
        if ids.source is None or ids.target is None:
            raise ValueError(f"{type(self).__name__} was fitted on scenario {ids.scenario!r}, "
                             "which has no source and target domain")
        labels, parsed = new_history(history, ids, unknown=unknown)
        item_ids = ids.domain(ids.target)
        scores = self.score_new_users(parsed, ids.target,
                                      torch.arange(len(item_ids), device=self.device)).cpu()
        values, items = top_k(scores, k)
        return as_frame(labels, values, items, item_ids)

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
