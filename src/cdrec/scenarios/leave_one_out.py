"""Multi-target leave-one-out: every domain is a target, ranked against sampled negatives.

Protocol (UCLR, DisenCDR): in each evaluated domain, every user with a held-out positive is
asked to rank it above ``n_neg`` items they never interacted with in that domain (training and
test rows both count as interactions), sampled once per split from the seed. MRR, HR@k and
NDCG@k (k in ``ks``) come from :func:`cdrec.metrics.sampled_rank_metrics`, averaged over users.

Which row is the held-out positive, per domain:

* the domain's ``given_test`` (a leave-one-out file shipped with the dataset) when there is one
  and ``use_given_test`` is true. Each of its users must have exactly one row there, else a
  ``DataError`` names the first user with several (no silent choice among them);
* otherwise each user's last interaction by timestamp when the domain has timestamps (ties:
  the later row in the table), else one interaction drawn at random from the seed; only users
  with at least two distinct items are held out, so everyone keeps one training item.

With ``validation`` true, one more positive per user is held out of the remaining training rows
(by the same rule: the latest by timestamp if there are timestamps, else seeded at random; only
for users still holding two distinct items), with its own sampled negatives: early stopping and
model selection see those, never a test row.

The train view is built from filtered tensors: every (user, item) pair held out for test or
validation is removed from it (duplicate rows of the pair included), ``given_test`` is dropped
from every domain, and explicit ratings are binarised (every observed interaction is a
positive). Negatives are distinct within a user's list and never one of the user's observed
items, ``given_test`` rows included (also when ``use_given_test`` is false).

Low-activity users (UCLR's refined analysis, Sec. 4.4 and Table 3): with ``low_activity`` set to
an integer ``m``, each domain's test evaluator also reports every metric over the test users
with at most ``m`` training interactions in that domain, as ``"low/{metric}"`` (per domain
``"{domain}/low/{metric}"``; unprefixed ``"low/{metric}"`` is the mean over domains, as for the
overall metrics). ``m = 2`` is Table 3's "one or two interactions". A user's count is the number
of distinct items they hold in the train view's domain, i.e. after the test and validation
positives are removed (:func:`training_counts`), and so fixed when the split is made; a test user
with none there (possible with a ``given_test`` file) is a cold user, not a low-activity one, and
is left out of the group. A domain whose group is empty gets a warning (its ``low/`` metrics are
NaN): on 5-core data nobody has one or two items, and ``m`` must be chosen from the data. The per-user
tables carry ``low/{metric}`` beside ``{metric}`` (NaN outside the group), so the runner's paired
tests and ``compare:`` cover the group's users alone. Only the test evaluators get the group:
early stopping and model selection stay on the overall validation metric. ``split.info`` gives
``low_activity`` and each domain's ``{domain}_low_activity_users``; none of these exist when
``low_activity`` is ``None`` (the default), which leaves the split and its metrics as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import StrictInt

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.sampling import observed_keys, pair_keys
from cdrec.data.schema import DataError
from cdrec.data.transforms import binarize
from cdrec.evaluation import SampledRankingEvaluator
from cdrec.scenarios.common import (
    check_domains,
    combine_evaluators,
    drop_pairs,
    evaluated_domains,
    in_sorted,
)
from cdrec.scenarios.registry import register_scenario
from cdrec.split import Evaluator, Split, TrainView

LOW_ACTIVITY = "low"  # the group name: metrics "low/NDCG@10", "phone/low/NDCG@10"

REJECTION_ROUNDS = 30  # then the few rows still colliding are drawn exactly, densely
DENSE_BUDGET = 1 << 24  # entries of the dense random-key block in that exact fallback


def one_row_per_user(user: torch.Tensor, eligible: torch.Tensor, timestamp: torch.Tensor | None,
                     generator: torch.Generator) -> torch.Tensor:
    """Row indices, one per user among the ``eligible`` rows: the latest by ``timestamp`` (ties:
    the later row), or a uniformly random one when there are no timestamps. Sorted by user."""
    rows = eligible.nonzero().squeeze(1)
    if timestamp is not None:
        rows = rows[torch.argsort(timestamp[rows], stable=True)]  # oldest first
        rows = rows[torch.argsort(user[rows], stable=True)]
        u = user[rows]
        pick = torch.ones_like(u, dtype=torch.bool)
        pick[:-1] = u[1:] != u[:-1]  # the last row of each user
    else:
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        rows = rows[torch.argsort(user[rows], stable=True)]
        u = user[rows]
        pick = torch.ones_like(u, dtype=torch.bool)
        pick[1:] = u[1:] != u[:-1]  # the first row of each user, in random order
    return rows[pick]


def distinct_items_per_user(inter: Interactions, n_items: int, n_users: int) -> torch.Tensor:
    """``[n_users]`` count of each user's distinct items in ``inter``."""
    keys = observed_keys(inter.user, inter.item, n_items)
    return torch.bincount(keys // n_items, minlength=n_users)


def training_counts(train: TrainView) -> dict[str, torch.Tensor]:
    """Per domain of ``train``, each user's number of training interactions: a ``[n_users]``
    count of the distinct items the user holds in that domain of the train view (repeated rows
    of a pair count once; users absent from the domain have 0).

    For a leave-one-out split this is the count after the test and validation positives are
    removed: the count ``low_activity`` thresholds. It suits any scenario's train view, e.g. to
    group users by activity (UCLR's Figure 5: learned temperatures against activity).
    """
    n_users = train.data.n_users
    return {name: distinct_items_per_user(dom.interactions, dom.n_items, n_users)
            for name, dom in train.data.domains.items()}


def sample_distinct_negatives(users: torch.Tensor, n_items: int, n_neg: int,
                              observed: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[len(users), n_neg]`` items, each row distinct and outside the user's ``observed`` keys
    (sorted, as :func:`cdrec.data.sampling.observed_keys` gives them).

    Vectorised rejection: draw every slot uniformly, then redraw only the slots that hit an
    observed item or repeat an earlier slot of their row. Rows still colliding after
    ``REJECTION_ROUNDS`` (users who interacted with most of the items) are drawn exactly: a
    random key per item, observed items excluded, the ``n_neg`` smallest kept. The caller checks
    that every user has ``n_neg`` unobserved items.
    """
    n = users.numel()
    items = torch.randint(n_items, (n, n_neg), generator=generator)
    bad = _collisions(users, items, n_items, observed)
    for _ in range(REJECTION_ROUNDS):
        if not bool(bad.any()):
            return items
        items[bad] = torch.randint(n_items, (int(bad.sum()),), generator=generator)
        bad = _collisions(users, items, n_items, observed)
    rows = bad.any(1).nonzero().squeeze(1)
    chunk = max(1, DENSE_BUDGET // n_items)
    all_items = torch.arange(n_items)
    for start in range(0, rows.numel(), chunk):  # blocks of the rare colliding rows
        block = rows[start:start + chunk]
        keys = torch.rand(block.numel(), n_items, generator=generator)
        seen = in_sorted(pair_keys(users[block].unsqueeze(1), all_items.unsqueeze(0), n_items),
                         observed)
        keys[seen] = 2.0  # above every uniform key: an observed item is never among the smallest
        items[block] = torch.topk(keys, n_neg, dim=1, largest=False).indices
    return items


def _collisions(users: torch.Tensor, items: torch.Tensor, n_items: int,
                observed: torch.Tensor) -> torch.Tensor:
    """Slots that are observed for their user or repeat an earlier slot of the same row."""
    hit = in_sorted(pair_keys(users.unsqueeze(1).expand_as(items), items, n_items), observed)
    sorted_items, order = torch.sort(items, dim=1, stable=True)
    repeat = torch.zeros_like(hit)
    repeat[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    dup = torch.zeros_like(hit).scatter_(1, order, repeat)
    return hit | dup


def _cutoffs(ks: Sequence[int] | int) -> tuple[int, ...]:
    """``ks`` as a tuple (one cut-off may be given as a bare integer)."""
    return tuple(ks) if not isinstance(ks, int) else (ks,)


@register_scenario
@dataclass(frozen=True)
class LeaveOneOut:
    """Leave-one-out sampled ranking in every domain (see module docstring)."""

    domains: Sequence[str] | None = None
    n_neg: StrictInt = 99
    ks: Sequence[StrictInt] | StrictInt = (10, 20)
    validation: bool = True
    use_given_test: bool = True
    # Also report the metrics over test users with at most this many training items in the
    # domain (UCLR Table 3: 2); None: off. A config that leaves it out keeps its fingerprint:
    # the runner hashes the scenario's params as written, not the dataclass's defaults.
    low_activity: StrictInt | None = None

    name: ClassVar[str] = "leave_one_out"

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", check_domains(self.domains))
        if isinstance(self.n_neg, bool) or not isinstance(self.n_neg, int) or self.n_neg < 1:
            raise ValueError(f"n_neg must be an integer >= 1, got {self.n_neg!r}")
        ks = _cutoffs(self.ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty list of positive integers, got {self.ks!r}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"ks repeats a cut-off: {list(ks)}")
        object.__setattr__(self, "ks", ks)
        low = self.low_activity
        if low is not None and (isinstance(low, bool) or not isinstance(low, int) or low < 1):
            raise ValueError(f"low_activity must be null or an integer >= 1 (the most training "
                             f"interactions of a low-activity user), got {low!r}")

    def split(self, data: CrossDomainData, seed: int) -> Split:
        names = evaluated_domains(data, self.domains)
        data = binarize(data)  # every observed interaction is a positive
        gen = torch.Generator().manual_seed(seed)  # held-out choices
        neg_gen = torch.Generator().manual_seed(seed + 7919)  # evaluation negatives: own stream
        new_domains = {name: dom.with_interactions(dom.interactions, given_test=None)
                       for name, dom in data.domains.items()}
        tests: dict[str, Evaluator] = {}
        vals: dict[str, Evaluator] = {}
        info: dict[str, object] = {}
        for name in names:  # a loop over domains; everything inside is vectorised
            dom = data[name]
            test_pos, how = self._test_positives(data, dom, gen)
            n_items = dom.n_items
            inter = dom.interactions
            rest = drop_pairs(inter, test_pos, n_items)
            val_pos = None
            if self.validation:
                eligible = distinct_items_per_user(rest, n_items, data.n_users)[rest.user] >= 2
                val_pos = rest.select(one_row_per_user(rest.user, eligible, rest.timestamp, gen))
                rest = drop_pairs(rest, val_pos, n_items)
            new_domains[name] = dom.with_interactions(rest, given_test=None)

            everything = inter if dom.given_test is None else inter.concat(dom.given_test)
            observed = observed_keys(everything.user, everything.item, n_items)
            self._check_room(data, name, n_items, observed, test_pos, val_pos)
            groups = {}
            if self.low_activity is not None:
                # What training_counts gives for this domain of the train view built below.
                counts = distinct_items_per_user(rest, n_items, data.n_users)
                held = counts[test_pos.user]
                groups[LOW_ACTIVITY] = (held >= 1) & (held <= self.low_activity)
                if not bool(groups[LOW_ACTIVITY].any()):
                    warnings.warn(
                        f"domain {name!r}: no test user has 1 to {self.low_activity} training "
                        f"items (the fewest any has is {int(held.min()) if held.numel() else 0}"
                        "), so its low/ metrics are NaN; raise low_activity", stacklevel=2)
            tests[name] = self._evaluator(name, test_pos, n_items, observed, neg_gen, groups)
            if val_pos is not None and len(val_pos):
                vals[name] = self._evaluator(name, val_pos, n_items, observed, neg_gen)
            info[f"{name}_test_users"] = len(test_pos)
            info[f"{name}_validation_users"] = 0 if val_pos is None else len(val_pos)
            info[f"{name}_train_interactions"] = len(rest)
            if groups:
                info[f"{name}_low_activity_users"] = int(groups[LOW_ACTIVITY].sum())
            info[f"{name}_test_from"] = how
        info["n_neg"] = self.n_neg
        if self.low_activity is not None:
            info["low_activity"] = self.low_activity
        train = TrainView(data.replace_domains(new_domains), scenario=self.name, implicit=True)
        return Split(train=train, test=combine_evaluators(tests),
                     validation=combine_evaluators(vals) if vals else None,
                     info=info)

    def _test_positives(self, data: CrossDomainData, dom: Domain, gen: torch.Generator
                        ) -> tuple[Interactions, str]:
        if self.use_given_test and dom.given_test is not None:
            given = dom.given_test
            if len(given) == 0:
                raise DataError(f"domain {dom.name!r}: given_test is empty; set "
                                "use_given_test: false to hold out from the interactions")
            counts = torch.bincount(given.user, minlength=data.n_users)
            if bool((counts > 1).any()):
                user = int(torch.argmax((counts > 1).int()))
                several = int((counts > 1).sum())
                raise DataError(
                    f"domain {dom.name!r}: given_test holds {int(counts[user])} rows for user "
                    f"{data.user_ids[user].tolist()!r} ({several} user(s) have several); "
                    "leave-one-out needs exactly one test row per user: set use_given_test: "
                    "false to hold out one interaction per user instead")
            return given.select(torch.argsort(given.user)), "given_test"
        inter = dom.interactions
        eligible = distinct_items_per_user(inter, dom.n_items, data.n_users)[inter.user] >= 2
        if not bool(eligible.any()):
            raise DataError(f"domain {dom.name!r}: no user has two or more distinct items, so "
                            "no one can be held out (leave-one-out keeps one training item)")
        rows = one_row_per_user(inter.user, eligible, inter.timestamp, gen)
        return inter.select(rows), "last_by_time" if inter.timestamp is not None else "random"

    def _check_room(self, data: CrossDomainData, name: str, n_items: int, observed: torch.Tensor,
                    test_pos: Interactions, val_pos: Interactions | None) -> None:
        users = test_pos.user if val_pos is None else torch.cat([test_pos.user, val_pos.user])
        room = n_items - torch.bincount(observed // n_items, minlength=data.n_users)[users]
        if bool((room < self.n_neg).any()):
            worst = int(torch.argmin(room))
            user = data.user_ids[int(users[worst])].tolist()
            raise ValueError(
                f"n_neg={self.n_neg} is too large for domain {name!r}: user {user!r} has only "
                f"{int(room[worst])} items they never interacted with (of the domain's "
                f"{n_items}); lower n_neg")

    def _evaluator(self, name: str, positives: Interactions, n_items: int,
                   observed: torch.Tensor, gen: torch.Generator,
                   groups: dict[str, torch.Tensor] | None = None) -> SampledRankingEvaluator:
        negatives = sample_distinct_negatives(positives.user, n_items, self.n_neg, observed, gen)
        return SampledRankingEvaluator(name, positives.user, positives.item, negatives,
                                       ks=_cutoffs(self.ks), groups=groups)
