"""Cold-start users: transfer from a source domain to users who have no target history.

Protocol (EMCDR, TMCDR, PTUPCDR, MetaEM): among users active in both domains (the overlap users), a
fraction ``test_fraction`` (beta) become cold-start test users and a further
``validation_fraction`` become cold-start validation users. All their target interactions are
removed from the train view (the tensors are filtered, so no model can see them); their source
interactions stay, since that is what transfer uses. Validation users drive early stopping and
model selection, so no choice is ever made on the test users.

Explicit mode reports MAE/RMSE on the test users' target ratings. Implicit mode binarises both
domains and ranks, per test user, their target items against ``n_neg`` sampled unobserved items per
positive (TMCDR samples 4), reporting AUC and NDCG@10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import StrictInt

from cdrec.data.dataset import CrossDomainData, Interactions
from cdrec.data.sampling import observed_keys
from cdrec.data.schema import DataError
from cdrec.data.transforms import binarize
from cdrec.evaluation import RankingEvaluator, RatingEvaluator, candidate_lists
from cdrec.scenarios.common import check_fraction, permute
from cdrec.scenarios.registry import register_scenario
from cdrec.split import Split, TrainView


@register_scenario
@dataclass(frozen=True)
class ColdStartUsers:
    """Source -> target transfer to cold-start users (see module docstring)."""

    source: str
    target: str
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    implicit: bool = False
    n_neg: StrictInt = 4
    binarize_threshold: float | None = None
    k: StrictInt = 10

    name: ClassVar[str] = "coldstart"

    def __post_init__(self) -> None:
        check_fraction("test_fraction", self.test_fraction)
        check_fraction("validation_fraction", self.validation_fraction, allow_zero=True)
        if self.test_fraction + self.validation_fraction >= 1:
            raise ValueError("test_fraction + validation_fraction must leave overlap users to "
                             f"train on, got {self.test_fraction} + {self.validation_fraction}")
        if self.source == self.target:
            raise ValueError(f"source and target must differ, both are {self.source!r}")
        if self.n_neg < 1:
            raise ValueError(f"n_neg must be >= 1, got {self.n_neg}")

    def split(self, data: CrossDomainData, seed: int) -> Split:
        source, target = data[self.source], data[self.target]
        if self.implicit and not (source.implicit and target.implicit):
            data = binarize(data, self.binarize_threshold)
            source, target = data[self.source], data[self.target]
        if not self.implicit and target.implicit:
            raise DataError(f"domain {self.target!r} holds implicit feedback; explicit cold-start "
                            "evaluation needs ratings: set implicit: true")
        overlap = data.overlap_users(self.source, self.target)
        n = overlap.numel()
        n_test = round(self.test_fraction * n)
        n_val = round(self.validation_fraction * n)
        if n == 0:
            raise DataError(f"no overlap users between {self.source!r} and {self.target!r}: "
                            "cold-start transfer needs users active in both domains")
        if n_test < 1 or n - n_test - n_val < 1:
            raise DataError(f"{n} overlap users are too few for test_fraction={self.test_fraction}"
                            f" and validation_fraction={self.validation_fraction}")
        order = overlap[permute(n, seed)]
        test_users = order[:n_test].sort().values
        val_users = order[n_test:n_test + n_val].sort().values
        train_overlap = order[n_test + n_val:].sort().values

        inter = target.interactions
        hidden = torch.isin(inter.user, torch.cat([test_users, val_users]))
        train_target = target.with_interactions(inter.select(~hidden), given_test=None)
        domains = {name: (train_target if name == self.target
                          else dom.with_interactions(dom.interactions, given_test=None))
                   for name, dom in data.domains.items()}
        train = TrainView(data.replace_domains(domains), scenario=self.name, source=self.source,
                          target=self.target, implicit=self.implicit)

        held_test = inter.select(torch.isin(inter.user, test_users))
        held_val = inter.select(torch.isin(inter.user, val_users))
        gen = torch.Generator().manual_seed(seed + 7919)  # evaluation negatives: own stream
        test = self._evaluator(test_users, held_test, target.n_items, inter, gen)
        validation = (self._evaluator(val_users, held_val, target.n_items, inter, gen)
                      if n_val else None)
        info: dict[str, object] = {
            "overlap_users": n, "test_users": n_test, "validation_users": n_val,
            "train_overlap_users": int(train_overlap.numel()),
            "test_interactions": len(held_test), "validation_interactions": len(held_val),
            "train_target_interactions": len(train_target.interactions)}
        return Split(train=train, test=test, validation=validation, info=info)

    def _evaluator(self, users: torch.Tensor, held: Interactions, n_items: int,
                   all_target: Interactions, gen: torch.Generator
                   ) -> RatingEvaluator | RankingEvaluator:
        if not self.implicit:
            return RatingEvaluator(self.target, held)
        observed = observed_keys(all_target.user, all_target.item, n_items)
        users = torch.unique(held.user)
        candidates, labels, mask = candidate_lists(users, held, n_items, self.n_neg, observed, gen)
        return RankingEvaluator(self.target, users, candidates, labels, mask, k=self.k)
