"""Serving a fitted model: original ids, top-k lists, and states of new users.

A model fitted by cdrec keeps what its training data called its users and items
(:class:`TrainedOn`), so recommendations come back by original id and the items a user already
has can be left out. Everything is batched: a block of users is scored against every item of a
domain at once, seen items are masked through a per-user (CSR) index, and ``torch.topk`` picks
the lists; there is no loop over users.

A *new* user (not in the training data, or without history in the target domain: a cold-start
user) is described by a source-domain history. :func:`fold_in` gives such users a state in a
base: with the item side fixed, each new user's state minimises the base's own training
objective on their rows, ``mean_j loss(s_u, j) + reg * ||s_u||^2`` (what a user's row of the
base minimises during training, cf. ``FactorBase.penalty``), by Adam from the prior (zero).
A transfer method then maps that source state as it maps a cold-start test user's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from cdrec.data.sampling import observed_keys, sample_negatives
from cdrec.split import Predictor, TrainView

if TYPE_CHECKING:
    from cdrec.models.bases.interface import EmbeddingBase


def _index_of(table: np.ndarray, values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Position of each of ``values`` in ``table`` (-1 where absent). Values are compared as
    the table's kind: integers when its ids are integers (so ``"42"`` from a command line finds
    user 42), text otherwise."""
    values = np.asarray(values, dtype=object)
    if np.issubdtype(table.dtype, np.integer):
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        whole = numbers.notna() & (numbers == numbers.round())
        query = np.where(whole, numbers.fillna(-1), np.nan)
        index = pd.Index(table.astype(np.int64))
        found = index.get_indexer(pd.Index(query[whole.to_numpy()].astype(np.int64)))
        out = np.full(len(values), -1, dtype=np.int64)
        out[whole.to_numpy()] = found
        return out
    return pd.Index(table.astype(str)).get_indexer(pd.Index([str(v) for v in values]))


def _shown(values: Iterable[Any], limit: int = 5) -> str:
    values = list(values)
    head = ", ".join(repr(v) for v in values[:limit])
    return head + (f" and {len(values) - limit} more" if len(values) > limit else "")


@dataclass(frozen=True)
class TrainedOn:
    """What a fitted model knows of its training data beyond its parameters: the original user
    ids (index = user index), each domain's original item ids, the (user, item) index pairs of
    each domain's training interactions (``seen``; empty when not kept), and the protocol."""

    user_ids: np.ndarray
    item_ids: dict[str, np.ndarray]
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scenario: str
    source: str | None = None
    target: str | None = None
    implicit: bool = False

    @classmethod
    def of(cls, train: TrainView) -> TrainedOn:
        data = train.data
        return cls(data.user_ids, {name: dom.item_ids for name, dom in data.domains.items()},
                   {name: (dom.interactions.user, dom.interactions.item)
                    for name, dom in data.domains.items()},
                   train.scenario, train.source, train.target, train.implicit)

    def domain(self, name: str) -> np.ndarray:
        if name not in self.item_ids:
            raise KeyError(f"no domain {name!r} in the model's training data; it has "
                           f"{sorted(self.item_ids)}")
        return self.item_ids[name]

    def users(self, ids: Sequence[Any] | np.ndarray) -> torch.Tensor:
        """User indices of original ids; a ``KeyError`` naming the ids the data does not have."""
        pos = _index_of(self.user_ids, ids)
        if (pos < 0).any():
            missing = np.asarray(ids, dtype=object)[pos < 0]
            raise KeyError(f"{len(missing)} user id(s) not in the model's training data: "
                           f"{_shown(missing)} (a new user's recommendations come from their "
                           "source history: recommend_from_history / --history)")
        return torch.from_numpy(pos.astype(np.int64))

    def items(self, domain: str, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Item indices of original ids in ``domain``; -1 for ids the domain does not have."""
        return _index_of(self.domain(domain), ids)

    @cached_property
    def _seen_index(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per domain, its seen items grouped by user (CSR): items, start and count per user."""
        index = {}
        for name, (user, item) in self.seen.items():
            order = torch.argsort(user, stable=True)
            count = torch.bincount(user, minlength=len(self.user_ids))
            index[name] = (item[order], torch.cumsum(count, 0) - count, count)
        return index

    def seen_pairs(self, domain: str, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, item)``: the training items of each of ``users`` in ``domain``, ``row``
        indexing ``users``."""
        if domain not in self.seen:
            raise ValueError("this model was saved without its training interactions "
                             "(include_seen=False): pass exclude_seen=False")
        items, start, count = self._seen_index[domain]
        n = count[users]
        row = torch.repeat_interleave(torch.arange(users.numel()), n)
        first = torch.cumsum(n, 0) - n
        offset = torch.arange(int(n.sum())) - first[row]
        return row, items[start[users][row] + offset]


def top_k(scores: torch.Tensor, k: int, exclude: tuple[torch.Tensor, torch.Tensor] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of each row of ``scores`` ``[U, n_items]``: ``(values, items)``, items in
    ``exclude`` (``(row, item)`` pairs) left out; a row with fewer than ``k`` candidates is
    padded with ``-inf`` values (dropped by :func:`as_frame`)."""
    scores = scores.float().clone()
    if exclude is not None:
        scores[exclude[0], exclude[1]] = float("-inf")
    return torch.topk(scores, min(k, scores.shape[1]), dim=1)


def as_frame(user_ids: Sequence[Any] | np.ndarray, values: torch.Tensor, items: torch.Tensor,
             item_ids: np.ndarray) -> pd.DataFrame:
    """Top-k lists as a long table: ``user, rank, item, score`` (original ids, rank from 1)."""
    n_users, k = values.shape
    keep = torch.isfinite(values).reshape(-1).numpy()
    frame = pd.DataFrame({
        "user": np.repeat(np.asarray(user_ids), k),
        "rank": np.tile(np.arange(1, k + 1), n_users),
        "item": item_ids[items.reshape(-1).numpy()],
        "score": values.reshape(-1).numpy()})
    return frame[keep].reset_index(drop=True)


def score_all_items(model: Predictor, domain: str, users: torch.Tensor, n_items: int
                    ) -> torch.Tensor:
    """Scores of every item of ``domain`` for each of ``users``: ``[U, n_items]``."""
    device = model.device
    u = users.to(device).repeat_interleave(n_items)
    i = torch.arange(n_items, device=device).repeat(users.numel())
    return model.predict(domain, u, i).view(users.numel(), n_items).cpu()


def user_blocks(n_users: int, n_items: int, pairs_per_block: int = 1 << 21) -> list[slice]:
    """Slices of users scored together, about ``pairs_per_block`` (user, item) pairs each, so
    memory stays bounded however many users are asked for."""
    size = max(1, pairs_per_block // max(1, n_items))
    return [slice(s, min(s + size, n_users)) for s in range(0, n_users, size)]


@dataclass(frozen=True)
class NewHistory:
    """Source-domain histories of ``n`` new users as flat rows: ``slot`` (which new user, 0..n-1),
    ``item`` (item index in the source domain), ``rating`` (1 for implicit feedback) and, when
    given, ``timestamp`` (methods that keep a user's most recent items use it)."""

    slot: torch.Tensor
    item: torch.Tensor
    rating: torch.Tensor
    n: int
    timestamp: torch.Tensor | None = None


def fold_in(base: EmbeddingBase, history: NewHistory, *, steps: int = 300, lr: float = 0.05,
            seed: int = 0) -> torch.Tensor:
    """States ``[n, user_dim]`` of new users in ``base`` from their interactions there, the
    item side fixed (module docstring); implicit feedback gets ``n_neg`` negatives per row,
    drawn afresh every step from the items outside that user's history."""
    device = next(base.parameters()).device
    slot, item = history.slot.to(device), history.item.to(device)
    rating = history.rating.to(device).float()
    count = torch.bincount(slot, minlength=history.n).clamp_min(1)
    weight = 1.0 / count[slot].float()  # every user's rows weigh one user in total
    generator = torch.Generator().manual_seed(seed)
    observed = observed_keys(slot.cpu(), item.cpu(), base.n_items) if base.implicit else None
    with torch.enable_grad():  # callers serve under no_grad; this fit needs gradients
        state = torch.zeros(history.n, base.user_dim, device=device, requires_grad=True)
        optimiser = torch.optim.Adam([state], lr=lr)
        reg = float(base.config.reg)
        for _ in range(steps):
            if observed is not None:
                negatives = sample_negatives(slot.cpu().repeat_interleave(base.config.n_neg),
                                             base.n_items, observed, generator)
                target = negatives.view(-1, base.config.n_neg).to(device)
            else:
                target = rating
            constrained = base.constrain_state(state)
            loss = history.n * base.loss_with(constrained[slot], item, target, weight)
            loss = loss + reg * constrained.pow(2).sum()
            (grad,) = torch.autograd.grad(loss, state)  # the base's own parameters stay untouched
            state.grad = grad
            optimiser.step()
    with torch.no_grad():
        return base.constrain_state(state).detach()


def new_history(history: pd.DataFrame | Mapping[Any, float], ids: TrainedOn, *,
                unknown: str = "warn") -> tuple[list[Any], NewHistory]:
    """Parse new users' source histories (``Recommender.recommend_from_history``) into
    ``(labels, NewHistory)``; item ids are looked up in the model's source domain."""
    if unknown not in ("warn", "error"):
        raise ValueError(f"unknown must be 'warn' or 'error', got {unknown!r}")
    if isinstance(history, Mapping):
        frame = pd.DataFrame({"item": list(history), "rating": list(history.values())})
    elif isinstance(history, pd.DataFrame):
        frame = history
    else:
        raise TypeError("history must be a DataFrame with an 'item' column or a mapping "
                        f"{{item: rating}}, not {type(history).__name__}")
    if "item" not in frame.columns:
        raise ValueError(f"the history has no 'item' column (it has {list(frame.columns)})")
    if len(frame) == 0:
        raise ValueError("the history is empty: a new user needs at least one source item")
    assert ids.source is not None
    if "rating" in frame.columns:
        ratings = _numbers(frame, "rating").astype(np.float32)
    elif ids.implicit:
        ratings = np.ones(len(frame), dtype=np.float32)
    else:
        raise ValueError("the model was trained on ratings: the history needs a 'rating' "
                         "column (or pass a mapping {item: rating})")
    position = ids.items(ids.source, frame["item"].to_numpy(dtype=object))
    missing = frame["item"].to_numpy(dtype=object)[position < 0]
    if len(missing):
        message = (f"{len(missing)} of {len(frame)} history item id(s) are not items of the "
                   f"source domain {ids.source!r}: {_shown(missing)}")
        if unknown == "error" or len(missing) == len(frame):
            raise KeyError(message + ("" if unknown == "error" else "; no known item is left"))
        warnings.warn(message + "; they are left out", UnknownIdsWarning, stacklevel=3)
    keep = position >= 0
    timestamp = None
    if "timestamp" in frame.columns:
        timestamp = torch.from_numpy(_numbers(frame, "timestamp").astype(np.int64)[keep])
    if "user" in frame.columns:  # several new users, one list per label (first-seen order)
        slot, labels = pd.factorize(frame["user"][keep], sort=False)
        dropped = set(frame["user"]) - set(labels)
        if dropped:
            raise KeyError(f"no known source item left for new user(s) {_shown(sorted(dropped))}")
        shown = list(labels)
    else:
        slot, shown = np.zeros(int(keep.sum()), dtype=np.int64), ["new"]
    return shown, NewHistory(torch.from_numpy(np.asarray(slot, dtype=np.int64)),
                             torch.from_numpy(position[keep].astype(np.int64)),
                             torch.from_numpy(ratings[keep]), len(shown), timestamp)


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A history column as numbers; a ``ValueError`` naming the first row that is not one."""
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise ValueError(f"history row {row + 1}: {column} {frame[column].iloc[row]!r} is not "
                         "a number")
    return values.to_numpy(dtype=np.float64)


class UnknownIdsWarning(UserWarning):
    """Ids a model's training data does not have were left out of a request."""
