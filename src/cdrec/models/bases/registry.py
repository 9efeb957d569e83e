"""The registry of embedding bases, by name (``MF``, ``BPR``, ...): what a transfer method's
``base`` setting names. Bases register when ``cdrec.models.bases`` is imported."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdrec.models.bases.interface import EmbeddingBase

BASES: dict[str, type[EmbeddingBase]] = {}


def register_base(name: str) -> Callable[[type[EmbeddingBase]], type[EmbeddingBase]]:
    def deco(cls: type[EmbeddingBase]) -> type[EmbeddingBase]:
        cls.registered_base = name
        BASES[name] = cls
        return cls

    return deco


def base_class(name: str) -> type[EmbeddingBase]:
    if name not in BASES:
        raise KeyError(f"unknown base model {name!r}; available: {', '.join(sorted(BASES))}")
    return BASES[name]


def base_spec(base: EmbeddingBase) -> dict[str, Any]:
    """What rebuilds ``base`` untrained (its registered name, sizes, feedback and settings): the
    part of a saved model's architecture that describes one base (``build_base`` reverses it)."""
    settings = base.config.model_dump(mode="json")
    fields = type(base).Config.model_fields  # a joint model may pass a config with more fields
    return {"base": base.registered_base, "n_users": base.n_users, "n_items": base.n_items,
            "implicit": base.implicit,
            "config": {k: v for k, v in settings.items() if k in fields}}


def build_base(spec: Mapping[str, Any], **kwargs: Any) -> EmbeddingBase:
    """An untrained base of the shape ``spec`` (from :func:`base_spec`) describes, for a saved
    state to be loaded into; ``kwargs`` go to the constructor (e.g. a shared user table)."""
    cls = base_class(spec["base"])
    return cls(int(spec["n_users"]), int(spec["n_items"]), cls.Config(**spec["config"]),
               implicit=bool(spec["implicit"]), **kwargs)
