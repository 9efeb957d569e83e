"""Dual-target rating prediction: every domain improves together, evaluated by k-fold (DML).

Protocol (DML, DDTCDR): each evaluated domain's ratings are split into ``k`` folds at random;
``split(data, seed)`` holds out one fold of every domain as the test set and trains on the rest,
so a model transferring between the domains is judged on both at once.

* Folds are drawn over distinct (user, item) pairs, so duplicate rows of a pair share a fold
  and a test pair can never also be in training. Fold sizes differ by at most one pair.
* Without ``fold``, seed ``s`` tests fold ``s % k`` of the partition drawn from ``s // k``:
  seeds ``0..k-1`` are one complete k-fold cross-validation (their test folds partition the
  rows), seeds ``k..2k-1`` a second one on a fresh shuffle, and so on. With ``fold`` given, every
  seed tests that fold of its own partition (drawn from ``s``).
* A domain's partition depends only on that seed and the domain's name, not on which other
  domains are evaluated.
* ``validation_fraction`` of the remaining pairs (drawn from the seed) are held out too, for
  early stopping and model selection; they are not in the train view either.

Metrics per domain (:class:`cdrec.evaluation.RatingTopKEvaluator`): MAE and RMSE pooled over the
test ratings, and Precision@``top_k`` / Recall@``top_k`` where each user's own test items are
ranked by predicted rating and an item is relevant when its true rating is
``>= relevance_threshold``: precision = relevant items in the user's top ``top_k`` / ``top_k``
(over users with a test item), recall = the same count / the user's relevant test items (over
users with one). Reported as ``"{domain}/{metric}"`` plus the mean over domains, unprefixed;
the main metric is RMSE (lower is better).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import StrictInt

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.sampling import pair_keys
from cdrec.data.schema import DataError
from cdrec.evaluation import RatingTopKEvaluator
from cdrec.scenarios.common import (
    check_domains,
    check_fraction,
    combine_evaluators,
    evaluated_domains,
)
from cdrec.scenarios.registry import register_scenario
from cdrec.split import Evaluator, Split, TrainView


def _domain_seed(seed: int, name: str) -> int:
    """A seed for one domain's draws: the run's seed mixed with a stable hash of the name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def pair_folds(inter: Interactions, n_items: int, k: int, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold of every row (``[n_rows]`` in ``0..k-1``) and the inverse index row -> pair.

    Distinct (user, item) pairs are shuffled with ``seed`` and dealt round-robin into ``k``
    folds; every row takes its pair's fold.
    """
    keys, inverse = torch.unique(pair_keys(inter.user, inter.item, n_items), return_inverse=True)
    order = torch.randperm(keys.numel(), generator=torch.Generator().manual_seed(seed))
    fold_of_pair = torch.empty(keys.numel(), dtype=torch.long)
    fold_of_pair[order] = torch.arange(keys.numel()) % k
    return fold_of_pair[inverse], inverse


@register_scenario
@dataclass(frozen=True)
class KFoldRating:
    """k-fold rating prediction in every domain at once (see module docstring)."""

    domains: Sequence[str] | None = None
    k: StrictInt = 5
    fold: StrictInt | None = None
    relevance_threshold: float = 4.0
    top_k: StrictInt = 5
    validation_fraction: float = 0.1

    name: ClassVar[str] = "kfold_rating"

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", check_domains(self.domains))
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k must be an integer >= 2 (number of folds), got {self.k!r}")
        if self.fold is not None and (isinstance(self.fold, bool) or not isinstance(self.fold, int)
                                      or not 0 <= self.fold < self.k):
            raise ValueError(f"fold must be an integer in [0, k) = [0, {self.k}), got "
                             f"{self.fold!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k!r}")
        check_fraction("validation_fraction", self.validation_fraction, allow_zero=True)

    def test_fold(self, seed: int) -> int:
        """The fold ``split(data, seed)`` tests."""
        return self.fold if self.fold is not None else seed % self.k

    def partition_seed(self, seed: int) -> int:
        """The seed the partition into folds is drawn from for ``split(data, seed)``."""
        return seed if self.fold is not None else seed // self.k

    def folds(self, data: CrossDomainData, seed: int) -> dict[str, torch.Tensor]:
        """Fold id of every interaction row of each evaluated domain, as ``split`` uses them."""
        out = {}
        for name in evaluated_domains(data, self.domains):
            dom = self._rated(data[name])
            out[name] = pair_folds(dom.interactions, dom.n_items, self.k,
                                   _domain_seed(self.partition_seed(seed), name))[0]
        return out

    def split(self, data: CrossDomainData, seed: int) -> Split:
        names = evaluated_domains(data, self.domains)
        test_fold = self.test_fold(seed)
        new_domains = {name: dom.with_interactions(dom.interactions, given_test=None)
                       for name, dom in data.domains.items()}
        tests: dict[str, Evaluator] = {}
        vals: dict[str, Evaluator] = {}
        info: dict[str, object] = {"fold": test_fold, "k": self.k}
        for name in names:  # a loop over domains; everything inside is vectorised
            dom = self._rated(data[name])
            inter = dom.interactions
            fold, pair = pair_folds(inter, dom.n_items, self.k,
                                    _domain_seed(self.partition_seed(seed), name))
            is_test = fold == test_fold
            # Validation: a seeded fraction of the remaining pairs (duplicates stay together).
            rest_pairs = torch.unique(pair[~is_test])
            n_val = round(self.validation_fraction * rest_pairs.numel())
            gen = torch.Generator().manual_seed(_domain_seed(seed, name) + 1)
            val_pairs = rest_pairs[torch.randperm(rest_pairs.numel(), generator=gen)[:n_val]]
            val_pair = torch.zeros(int(pair.max()) + 1, dtype=torch.bool)
            val_pair[val_pairs] = True
            is_val = val_pair[pair]
            train_rows = inter.select(~(is_test | is_val))
            if len(train_rows) == 0:
                raise DataError(f"domain {name!r}: no training ratings left after holding out "
                                f"the test fold and validation_fraction={self.validation_fraction}")
            new_domains[name] = dom.with_interactions(train_rows, given_test=None)
            eval_gen = torch.Generator().manual_seed(_domain_seed(seed, name) + 2)  # tie-breaks
            tests[name] = RatingTopKEvaluator(name, inter.select(is_test), k=self.top_k,
                                              relevance_threshold=self.relevance_threshold,
                                              generator=eval_gen)
            if bool(is_val.any()):
                vals[name] = RatingTopKEvaluator(name, inter.select(is_val), k=self.top_k,
                                                 relevance_threshold=self.relevance_threshold,
                                                 generator=eval_gen)
            info[f"{name}_test_ratings"] = int(is_test.sum())
            info[f"{name}_validation_ratings"] = int(is_val.sum())
            info[f"{name}_train_ratings"] = len(train_rows)
        train = TrainView(data.replace_domains(new_domains), scenario=self.name, implicit=False)
        return Split(train=train, test=combine_evaluators(tests),
                     validation=combine_evaluators(vals) if vals else None,
                     info=info)

    def _rated(self, dom: Domain) -> Domain:
        if dom.implicit:
            raise DataError(f"domain {dom.name!r} holds implicit feedback; kfold_rating "
                            "evaluates rating prediction and needs explicit ratings")
        n_pairs = torch.unique(pair_keys(dom.interactions.user, dom.interactions.item,
                                         dom.n_items)).numel()
        if n_pairs < self.k:
            raise DataError(f"domain {dom.name!r} has {n_pairs} distinct (user, item) ratings, "
                            f"fewer than k={self.k} folds")
        return dom

