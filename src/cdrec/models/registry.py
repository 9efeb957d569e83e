"""The model registry: every method is registered under a name, explicitly, when its family
package is imported (``cdrec.models`` imports every family)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cdrec.models.recommender import Recommender

# The scenarios whose train view has labels in every domain a model is judged on: the
# single-domain bases, the floors and joint models serve all of them. A model names the
# scenarios it serves explicitly; the contract test checks the names are registered scenarios.
LABELLED_SCENARIOS = frozenset({"coldstart", "kfold_rating", "leave_one_out"})
# Those of them that can judge implicit feedback (kfold_rating evaluates ratings only): what a
# ranking model, trained on interactions alone, can serve.
IMPLICIT_SCENARIOS = frozenset({"coldstart", "leave_one_out"})

_REGISTRY: dict[str, type[Recommender]] = {}
R = TypeVar("R", bound=type[Recommender])


def register(name: str) -> Callable[[R], R]:
    """Class decorator: make a model buildable by name from configs and the CLI."""

    def deco(cls: R) -> R:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name]}")
        cls.registered_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def register_variants(cls: type[Recommender], prefix: str, bases: list[str],
                      defaults: dict[str, object] | None = None) -> None:
    """Register ``<prefix>_<base>`` for each base: subclasses of ``cls`` whose ``base`` (and any
    other ``defaults``) are preset, e.g. EMCDR_MF, EMCDR_BPR, TMCDR_CML."""
    for base in bases:
        doc = f"{prefix} over the {base} base" + (f" ({defaults})" if defaults else "") + "."
        register_preset(cls, f"{prefix}_{base}", {**(defaults or {}), "base": base}, doc)


def register_preset(cls: type[Recommender], name: str, preset: dict[str, object],
                    doc: str) -> None:
    """Register ``name``: a subclass of ``cls`` whose hyper-parameters start from ``preset``
    (a class's ``variant_defaults``; a user's own values are merged over them)."""
    meta: type = type(cls)  # the metaclass (ABCMeta): mypy cannot call type[type[...]]
    sub: type[Recommender] = meta(name, (cls,), {
        "variant_defaults": {**getattr(cls, "variant_defaults", {}), **preset},
        "__doc__": doc, "__module__": cls.__module__})
    register(name)(sub)


def registered() -> dict[str, type[Recommender]]:
    """Name -> class of every model registered so far (``cdrec.models.available_models`` is the
    complete list, once every family is imported)."""
    return dict(sorted(_REGISTRY.items()))
