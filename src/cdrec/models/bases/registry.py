"""The registry of embedding bases, by name (``MF``, ``BPR``, ...): what a transfer method's
``base`` setting names. Bases register when ``cdrec.models.bases`` is imported."""

from __future__ import annotations

from collections.abc import Callable

from cdrec.models.bases.interface import EmbeddingBase

BASES: dict[str, type[EmbeddingBase]] = {}


def register_base(name: str) -> Callable[[type[EmbeddingBase]], type[EmbeddingBase]]:
    def deco(cls: type[EmbeddingBase]) -> type[EmbeddingBase]:
        BASES[name] = cls
        return cls

    return deco


def base_class(name: str) -> type[EmbeddingBase]:
    if name not in BASES:
        raise KeyError(f"unknown base model {name!r}; available: {', '.join(sorted(BASES))}")
    return BASES[name]
