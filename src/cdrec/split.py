"""What every evaluation protocol hands to a model, and what judges it afterwards.

A leaf module: it imports no model and no scenario, so models, scenarios, evaluators and the
runner can all depend on it without a cycle.

``TrainView`` is the only object a model sees while fitting. Held-out labels never enter it: a
scenario builds it from filtered tensors, so a model cannot peek even by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import torch

from cdrec.data.dataset import CrossDomainData


@dataclass(frozen=True)
class TrainView:
    """What a model may use to fit.

    ``scenario`` names the protocol (a registered scenario, e.g. ``coldstart``) so a model can
    check it supports it; ``source``/``target`` are set for transfer scenarios; ``implicit``
    says whether labels are binary interactions (ranking losses) or ratings.
    """

    data: CrossDomainData
    scenario: str
    source: str | None = None
    target: str | None = None
    implicit: bool = False

    @property
    def domains(self) -> list[str]:
        return list(self.data.domains)

    def transfer_domains(self) -> tuple[str, str]:
        """``(source, target)`` of a transfer scenario; a ``ValueError`` naming the scenario
        when the view does not set both."""
        if self.source is None or self.target is None:
            raise ValueError(f"scenario {self.scenario!r} gives no source and target domain "
                             f"(source={self.source!r}, target={self.target!r}); this method "
                             "needs a transfer scenario such as 'coldstart'")
        return self.source, self.target


class Predictor(Protocol):
    """What an evaluator needs of a model: scores of (user, item) pairs of one domain, the
    device its tensors live on, and a check that it has been fitted."""

    @property
    def device(self) -> torch.device: ...

    def check_fitted(self) -> None: ...

    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...


class Evaluator(Protocol):
    """Scores a fitted model on one set of held-out cases.

    ``main_metric`` is the one early stopping and model selection use; ``higher_is_better`` gives
    its direction. ``evaluate`` returns the protocol's summary metrics; ``per_user`` returns one row
    per evaluated user (columns ``user`` plus one per metric) for paired significance tests.
    ``domain`` is the one domain judged, or ``None`` for an evaluator over several; a model that
    validates one domain at a time asks ``for_domain`` for that domain's part (``None`` if it is
    not evaluated).
    """

    main_metric: str
    higher_is_better: bool

    @property
    def domain(self) -> str | None: ...

    def for_domain(self, domain: str) -> Evaluator | None: ...

    def evaluate(self, model: Predictor) -> dict[str, float]: ...

    def per_user(self, model: Predictor) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Split:
    """A train view, an optional validation evaluator (for early stopping), and the test one."""

    train: TrainView
    test: Evaluator
    validation: Evaluator | None = None
    info: dict[str, object] | None = None

    def evaluate(self, model: Predictor) -> dict[str, float]:
        return self.test.evaluate(model)
