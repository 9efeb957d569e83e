"""In-memory cross-domain data: one user id space, named domains with their own items.

Interactions are held once as tensors (``Interactions``); original ids are kept in numpy arrays so
output can use them. A domain may carry user and item feature tables
(:class:`cdrec.data.features.FeatureTable`), their rows aligned to the internal ids. Nothing here
knows about models or evaluation protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from cdrec.data.features import FeatureTable


@dataclass(frozen=True)
class Interactions:
    """A table of (user, item, rating[, timestamp]) rows as aligned 1-D tensors.

    ``user`` indexes the dataset-wide user space, ``item`` the domain's own item space.
    """

    user: torch.Tensor  # int64
    item: torch.Tensor  # int64
    rating: torch.Tensor  # float32
    timestamp: torch.Tensor | None = None  # int64

    def __post_init__(self) -> None:
        n = self.user.shape[0]
        for name in ("item", "rating", "timestamp"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"Interactions.{name} has {value.shape[0]} rows, user has {n}")

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def select(self, index: torch.Tensor) -> Interactions:
        """Rows picked by a boolean mask or an index tensor."""
        ts = None if self.timestamp is None else self.timestamp[index]
        return Interactions(self.user[index], self.item[index], self.rating[index], ts)

    def concat(self, other: Interactions) -> Interactions:
        ts = None
        if self.timestamp is not None and other.timestamp is not None:
            ts = torch.cat([self.timestamp, other.timestamp])
        return Interactions(
            torch.cat([self.user, other.user]),
            torch.cat([self.item, other.item]),
            torch.cat([self.rating, other.rating]),
            ts,
        )

    def users_present(self) -> torch.Tensor:
        return torch.unique(self.user)

    def with_rating(self, rating: torch.Tensor) -> Interactions:
        return replace(self, rating=rating)

    @staticmethod
    def empty() -> Interactions:
        z = torch.zeros(0, dtype=torch.long)
        return Interactions(z, z.clone(), torch.zeros(0, dtype=torch.float32))


@dataclass(frozen=True)
class Domain:
    """One domain: its items (with original ids) and its observed interactions.

    ``given_test`` holds a held-out table shipped with the dataset (e.g. leave-one-out test files);
    scenarios decide whether to use it. ``rating_scale`` is ``(low, high)`` for explicit ratings,
    ``None`` for implicit feedback (all ratings 1).

    ``item_features`` (optional) has one row per item of the domain (row ``j`` is item ``j``);
    ``user_features`` (optional) one row per user of the whole dataset (row ``u`` is user ``u``
    of ``CrossDomainData.user_ids``), so several domains may share one table. Code that
    re-indexes items must select the rows of ``item_features`` too (``FeatureTable.select``):
    a table whose row count differs from the items is refused.
    """

    name: str
    item_ids: np.ndarray
    interactions: Interactions
    rating_scale: tuple[float, float] | None = None
    given_test: Interactions | None = None
    user_features: FeatureTable | None = None
    item_features: FeatureTable | None = None

    def __post_init__(self) -> None:
        for entity, table in (("user", self.user_features), ("item", self.item_features)):
            if table is not None and table.entity != entity:
                raise ValueError(f"domain {self.name!r}: {entity}_features holds "
                                 f"{table.entity} features")
        table = self.item_features
        if table is not None and table.n_rows != len(self.item_ids):
            raise ValueError(
                f"domain {self.name!r}: item_features has {table.n_rows} rows but the domain "
                f"has {len(self.item_ids)} items; when items are added, removed or re-indexed, "
                f"select the feature rows to match (FeatureTable.select) or drop them "
                f"(item_features=None)")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def implicit(self) -> bool:
        return self.rating_scale is None

    def users(self) -> torch.Tensor:
        """Sorted ids of users with at least one interaction here."""
        return self.interactions.users_present()

    def with_interactions(self, interactions: Interactions, given_test: Interactions | None = None
                          ) -> Domain:
        """The domain with other rows (same users and items, so the feature tables stay)."""
        return replace(self, interactions=interactions, given_test=given_test)


@dataclass(frozen=True)
class CrossDomainData:
    """Named domains sharing one user id space (``user_ids[i]`` is user ``i``'s original id)."""

    user_ids: np.ndarray
    domains: dict[str, Domain]
    name: str = "data"
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dom in self.domains.values():
            table = dom.user_features
            if table is not None and table.n_rows != len(self.user_ids):
                raise ValueError(
                    f"domain {dom.name!r}: user_features has {table.n_rows} rows but the data "
                    f"has {len(self.user_ids)} users; when users are added, removed or "
                    f"re-indexed, select the feature rows to match (FeatureTable.select) or "
                    f"drop them (user_features=None)")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def __getitem__(self, domain: str) -> Domain:
        try:
            return self.domains[domain]
        except KeyError:
            raise KeyError(
                f"no domain {domain!r} in dataset {self.name!r}; it has {sorted(self.domains)}"
            ) from None

    def overlap_users(self, a: str, b: str) -> torch.Tensor:
        """Sorted ids of users with interactions in both domains ``a`` and ``b``."""
        ua, ub = self[a].users(), self[b].users()
        return ua[torch.isin(ua, ub)]

    def replace_domains(self, domains: dict[str, Domain]) -> CrossDomainData:
        return replace(self, domains=domains)

    def summary(self) -> list[dict[str, object]]:
        """One row per domain: rows, users, items, density; for tables and `cdrec datasets`."""
        rows = []
        for name, dom in self.domains.items():
            n = len(dom.interactions)
            users = len(dom.users())
            rows.append({
                "domain": name,
                "rows": n,
                "users": users,
                "items": dom.n_items,
                "density": n / max(1, users * dom.n_items),
                "scale": "implicit" if dom.rating_scale is None else f"{dom.rating_scale[0]:g}..{dom.rating_scale[1]:g}",
                "given_test_rows": 0 if dom.given_test is None else len(dom.given_test),
            })
        return rows
