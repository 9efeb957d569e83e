"""Pretrained bases shared by the fits of one split, exactly (see :class:`BaseCache`)."""

from __future__ import annotations

import torch

from cdrec.models.bases.interface import BaseConfig
from cdrec.split import TrainView
from cdrec.train import FitContext


class BaseCache:
    """Pretrained bases shared by the fits of one split (``FitContext.base_cache``).

    Transfer methods in one run (EMCDR, TMCDR, PTUPCDR, DCDCSR, ... over the same base) and the
    trials of a search over their own stage pretrain identical bases. A hit is exact: the key
    holds the domain's interactions (by identity, kept alive), the base and its settings, the
    device, and the states of the context generator and of torch's global generator before
    pretraining; the entry restores both states to what they were after it, so a fit that hits
    gives the same numbers as one that trains. Least recently used entries go beyond
    ``max_entries``.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple, dict] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(train: TrainView, domain: str, name: str, config: BaseConfig,
            context: FitContext, *, extra: tuple = ()) -> tuple:
        """The key of pretraining base ``name`` on ``domain`` now; ``extra`` adds whatever
        else the stage depends on (a multi-domain stage's other domains, its validator)."""
        interactions = train.data[domain].interactions
        return (id(interactions), domain, name, config.model_dump_json(), str(context.device),
                context.generator.get_state().numpy().tobytes(),
                torch.get_rng_state().numpy().tobytes(), *extra)

    def get(self, key: tuple) -> dict | None:
        entry = self.entries.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        self.entries[key] = entry  # most recent last
        self.hits += 1
        return entry

    def put(self, key: tuple, entry: dict) -> None:
        self.entries[key] = entry
        while len(self.entries) > self.max_entries:
            self.entries.pop(next(iter(self.entries)))
