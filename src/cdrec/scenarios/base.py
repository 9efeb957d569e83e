"""What every evaluation protocol returns: a ``Split`` with the train view and held-out cases.

``TrainView`` is the only object a model sees while fitting. Held-out labels never enter it: a
scenario builds it from filtered tensors, so a model cannot peek even by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pandas as pd
import torch

from cdrec.data.dataset import CrossDomainData

if TYPE_CHECKING:
    from cdrec.models.base import Recommender


@dataclass(frozen=True)
class TrainView:
    """What a model may use to fit.

    ``scenario`` names the protocol (``coldstart``, ``leave_one_out``, ``kfold_rating``) so a
    model can check it supports it; ``source``/``target`` are set for transfer scenarios;
    ``implicit`` says whether labels are binary interactions (ranking losses) or ratings.
    """

    data: CrossDomainData
    scenario: str
    source: str | None = None
    target: str | None = None
    implicit: bool = False

    @property
    def domains(self) -> list[str]:
        return list(self.data.domains)


class Evaluator(Protocol):
    """Scores a fitted model on one set of held-out cases.

    ``main_metric`` is the one early stopping and model selection use; ``higher_is_better`` gives
    its direction. ``evaluate`` returns the protocol's summary metrics; ``per_user`` returns one row
    per evaluated user (columns ``user`` plus one per metric) for paired significance tests.
    """

    main_metric: str
    higher_is_better: bool

    def evaluate(self, model: Recommender) -> dict[str, float]: ...

    def per_user(self, model: Recommender) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Split:
    """A train view, an optional validation evaluator (for early stopping), and the test one."""

    train: TrainView
    test: Evaluator
    validation: Evaluator | None = None
    info: dict[str, object] | None = None

    def evaluate(self, model: Recommender) -> dict[str, float]:
        return self.test.evaluate(model)


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value}")


def permute(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of range(n); scenarios draw every random choice from the seed."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
