"""The devices of a federation: each user's ratings, by domain, as that user's device holds them.

A :class:`DeviceStore` is written once from the training view (``DeviceStore.from_view``) and
read by the ClientApp: in the simulation every node reads the one file and keeps only its own
partition's rows; in a deployment each SuperNode is given a file by ``--node-config`` (the same
format; ``cdrec federated-devices`` writes one, and ``DeviceStore.subset`` cuts per-device
files). The server never opens it: it learns each node's user index and the domains it has data
in from the node's answer to a ``query`` message (``cdrec.federated.flower``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cdrec.federated.protocol import DeviceData
from cdrec.split import TrainView

FORMAT = "cdrec-devices-1"


@dataclass(frozen=True)
class DeviceStore:
    """``users[p]`` is partition p's user index; per domain, partition p's rows are
    ``items[d][indptr[d][p]:indptr[d][p + 1]]`` (and the same slice of ``ratings[d]``)."""

    users: torch.Tensor
    indptr: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor]
    ratings: dict[str, torch.Tensor]
    # Of the whole federation's data (kept by ``subset``): a device names its split with it.
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            digest = hashlib.sha256(self.users.numpy().tobytes())
            for name in sorted(self.indptr):
                for t in (self.indptr[name], self.items[name], self.ratings[name]):
                    digest.update(name.encode())
                    digest.update(t.contiguous().numpy().tobytes())
            object.__setattr__(self, "fingerprint", digest.hexdigest()[:16])

    @classmethod
    def from_view(cls, train: TrainView, users: torch.Tensor | None = None) -> DeviceStore:
        """One device per user with training data in any domain (or per ``users``)."""
        data = train.data
        if users is None:
            seen = [d.interactions.user for d in data.domains.values()]
            users = torch.unique(torch.cat(seen)) if seen else torch.zeros(0, dtype=torch.long)
        users = users.to(torch.long).cpu()
        position = torch.full((data.n_users,), -1, dtype=torch.long)
        position[users] = torch.arange(users.numel())
        indptr, items, ratings = {}, {}, {}
        for name, dom in data.domains.items():
            rows = dom.interactions
            part = position[rows.user.cpu()]
            keep = part >= 0
            part = part[keep]
            order = torch.argsort(part, stable=True)
            counts = torch.bincount(part, minlength=users.numel())
            indptr[name] = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
            items[name] = rows.item.cpu()[keep][order]
            ratings[name] = rows.rating.cpu()[keep][order].to(torch.float32)
        return cls(users, indptr, items, ratings)

    @property
    def domains(self) -> list[str]:
        return list(self.indptr)

    def __len__(self) -> int:
        return int(self.users.numel())

    def device(self, partition: int, domain: str) -> DeviceData:
        """Partition ``partition``'s rows in ``domain``."""
        if not 0 <= partition < len(self):
            raise IndexError(f"partition {partition} is not in this store of {len(self)} "
                             f"devices")
        if domain not in self.indptr:
            raise KeyError(f"no domain {domain!r} in this store (domains: {self.domains})")
        lo, hi = int(self.indptr[domain][partition]), int(self.indptr[domain][partition + 1])
        return DeviceData(self.items[domain][lo:hi], self.ratings[domain][lo:hi])

    def partition_of(self) -> dict[int, int]:
        """user index -> partition."""
        return {int(u): p for p, u in enumerate(self.users.tolist())}

    def subset(self, partitions: Sequence[int]) -> DeviceStore:
        """A store holding only ``partitions`` (renumbered in that order): one device's file."""
        parts = [int(p) for p in partitions]
        indptr, items, ratings = {}, {}, {}
        for name in self.indptr:
            rows = [self.device(p, name) for p in parts]
            counts = torch.tensor([r.items.numel() for r in rows], dtype=torch.long)
            indptr[name] = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
            items[name] = torch.cat([r.items for r in rows]) if rows else self.items[name][:0]
            ratings[name] = (torch.cat([r.ratings for r in rows]) if rows
                             else self.ratings[name][:0])
        return DeviceStore(self.users[torch.tensor(parts, dtype=torch.long)], indptr, items,
                           ratings, self.fingerprint)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "users": self.users, "indptr": self.indptr,
                    "items": self.items, "ratings": self.ratings,
                    "fingerprint": self.fingerprint}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DeviceStore:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"device data file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say which
            raise ValueError(f"{path} is not a cdrec device data file: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a cdrec device data file (format "
                             f"{state.get('format') if isinstance(state, dict) else None!r}, "
                             f"expected {FORMAT!r})")
        return cls(state["users"], state["indptr"], state["items"], state["ratings"],
                   str(state["fingerprint"]))
