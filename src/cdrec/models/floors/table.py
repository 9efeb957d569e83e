"""The common shape of the floors: one score table per domain, looked up per item."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from cdrec.models.recommender import Recommender
from cdrec.models.registry import LABELLED_SCENARIOS
from cdrec.models.serving import NewHistory
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext


class PerDomainTable(Recommender):
    """Base for models whose prediction is a lookup in one score table per domain."""

    supports = LABELLED_SCENARIOS
    is_floor = True

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        self.domains_ = list(train.domains)
        for name in self.domains_:
            dom = train.data[name]
            self.register_buffer(f"table_{name}", self._table(dom.interactions.item,
                                                              dom.interactions.rating,
                                                              dom.n_items).to(context.device))

    def architecture(self) -> dict[str, Any]:
        return {"items": {name: int(getattr(self, f"table_{name}").numel())
                          for name in self.domains_}}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        for name, n_items in architecture["items"].items():
            self.register_buffer(f"table_{name}", torch.zeros(n_items))

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        items = torch.arange(n_items, device=users.device)
        return self.predict(domain, torch.zeros_like(items), items).expand(users.numel(), -1)

    def score_new_users(self, history: NewHistory, target: str, items: torch.Tensor
                        ) -> torch.Tensor:
        """A floor scores every user alike: a new user gets its ranking, history unused."""
        return self.predict(target, torch.zeros_like(items), items).expand(history.n, -1)

    @abstractmethod
    def _table(self, items: torch.Tensor, ratings: torch.Tensor, n_items: int) -> torch.Tensor:
        """The ``[n_items]`` score table of one domain from its training interactions."""

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.domains_:
            raise KeyError(f"{type(self).__name__} was fitted on {self.domains_}, not {domain!r}")
        return getattr(self, f"table_{domain}")[items]
