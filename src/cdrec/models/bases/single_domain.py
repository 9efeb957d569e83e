"""Single-domain recommenders over a base (MF, BPR, CML, ...): no transfer between domains."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.interface import BaseConfig, EmbeddingBase
from cdrec.models.bases.pretrain import new_base, pretrain_base
from cdrec.models.bases.registry import BASES, base_spec, build_base
from cdrec.models.recommender import Recommender, validation_for, validator
from cdrec.models.registry import IMPLICIT_SCENARIOS, LABELLED_SCENARIOS
from cdrec.models.serving import NewHistory
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext


def merge_domains(train: TrainView, order: Sequence[str]) -> tuple[TrainView, dict[str, int]]:
    """The domains ``order`` of the train view as ONE domain named after the first, with one
    user table: their items one after another, item ``i`` of domain ``d`` becoming item
    ``offsets[d] + i`` (the first domain keeps its indices). Returns that view (the merged domain
    its target, no source) and ``offsets``. The merged domain has no feature tables: the bases
    trained on it read ids only, and items of different domains share no feature columns."""
    if not order:
        raise ValueError("merge_domains needs at least one domain")
    offsets: dict[str, int] = {}
    rows: Interactions | None = None
    item_ids = []
    n_items = 0
    for name in order:
        dom = train.data[name]
        offsets[name], n_items = n_items, n_items + dom.n_items
        x = dom.interactions
        shifted = Interactions(x.user, x.item + offsets[name], x.rating, x.timestamp)
        rows = shifted if rows is None else rows.concat(shifted)
        item_ids.append(dom.item_ids.astype(object))
    assert rows is not None
    first = train.data[order[0]]
    merged = replace(first, interactions=rows, item_ids=np.concatenate(item_ids),
                     given_test=None, item_features=None, user_features=None)
    view = TrainView(train.data.replace_domains({order[0]: merged}), train.scenario, None,
                     order[0], train.implicit)
    return view, offsets


def merged_epoch_batches(train: TrainView, offsets: Mapping[str, int], n_neg: int
                         ) -> Callable[[torch.Generator], list[torch.Tensor]]:
    """The ``epoch_data`` of one base over the domains merged by :func:`merge_domains`: every
    domain's rows with their items shifted by ``offsets``; on implicit feedback a positive's
    negatives are drawn from *its own* domain (the evaluation ranks within one domain, so
    negatives drawn from the merged index would be spent on telling domains apart)."""
    per_domain = [(offset, epoch_batches(train.data[name].interactions, train.data[name].n_items,
                                         train.implicit, n_neg))
                  for name, offset in offsets.items()]

    def epoch_data(gen: torch.Generator) -> list[torch.Tensor]:
        parts = []
        for offset, draw in per_domain:  # (users, items, ratings or own-domain negatives)
            users, items, extra = draw(gen)
            parts.append((users, items + offset, extra + offset if train.implicit else extra))
        return [torch.cat(column) for column in zip(*parts, strict=True)]

    return epoch_data


def merged_target_view(train: TrainView) -> TrainView:
    """The cold-start train view as ONE domain: target items first (their indices unchanged),
    then the source items, with one user table; TMCDR's single-domain baselines "consider both
    source and target domains as a single domain" (TMCDR Sec. 3.1, Baselines)."""
    source_name, target_name = train.transfer_domains()
    return merge_domains(train, [target_name, source_name])[0]


class SingleDomain(Recommender):
    """A base trained on each domain separately, no transfer.

    In the cold-start scenario the source and target are merged into one domain (see
    :func:`merged_target_view`), as TMCDR's single-domain baselines are, so a cold user's
    embedding is learned from their source interactions; TGT (``merge_in_coldstart = False``)
    trains on the target alone, the floor.
    """

    base_name: ClassVar[str] = ""
    merge_in_coldstart: ClassVar[bool] = True
    # Whether a cold-start user is served at the base's prior (zero state): TGT and BiasFloor,
    # which never see a cold user's source data, so a new user's history changes nothing.
    serves_new_users_at_prior: ClassVar[bool] = False
    supports = LABELLED_SCENARIOS
    config: BaseConfig  # ``Config`` is the base's own config class (set below)
    models: nn.ModuleDict  # domain -> its EmbeddingBase, set in ``_fit``

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.base_name:
            base = BASES[cls.base_name]
            cls.Config = base.Config
            if base.implicit_only:  # a ranking model cannot predict ratings
                cls.supports = cls.supports & IMPLICIT_SCENARIOS

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        domains = train.domains
        if train.scenario == "coldstart":
            domains = [train.transfer_domains()[1]]  # the source is never evaluated
            if self.merge_in_coldstart:
                train = merged_target_view(train)
        self.models = nn.ModuleDict()
        for domain in domains:
            # Registered before training so validation can call predict on it.
            base = new_base(train, domain, self.base_name, self.config, context)
            self.models[domain] = base
            pretrain_base(train, domain, self.base_name, self.config, context, base=base,
                          validate=validator(self, validation_for(validation, domain)))

    def architecture(self) -> dict[str, Any]:
        return {"bases": {domain: base_spec(self.base(domain)) for domain in self.models}}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        self.models = nn.ModuleDict({domain: build_base(spec)
                                     for domain, spec in architecture["bases"].items()})

    def base(self, domain: str) -> EmbeddingBase:
        """The fitted base of ``domain``."""
        base = self.models[domain]
        assert isinstance(base, EmbeddingBase)
        return base

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"{type(self).__name__} was fitted on {list(self.models)}, "
                           f"not {domain!r}")
        base = self.base(domain)
        return base.score_items(base.user_state(users), torch.arange(n_items,
                                                                     device=users.device))

    def score_new_users(self, history: NewHistory, target: str, items: torch.Tensor
                        ) -> torch.Tensor:
        if not self.serves_new_users_at_prior:
            return super().score_new_users(history, target, items)
        if target not in self.models:
            raise KeyError(f"{type(self).__name__} was fitted on {list(self.models)}, "
                           f"not {target!r}")
        base = self.base(target)
        return base.score_items(torch.zeros(history.n, base.user_dim, device=items.device),
                                items)

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"{type(self).__name__} was fitted on {list(self.models)}, "
                           f"not {domain!r}")
        return self.models[domain](users, items)
