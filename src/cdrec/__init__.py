"""cdrec: cross-domain recommendation in PyTorch.

The names a user needs, from the top-level package (imported on first use, so that the ``cdrec``
command starts without loading every model)::

    import cdrec

    data = cdrec.load_sample("douban")                   # or cdrec.read_douban(path), ...
    split = cdrec.build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    model = cdrec.build_model("EMCDR").fit(split.train, split.validation)
    model.save("emcdr.pt"); model = cdrec.load("emcdr.pt")
    model.recommend("music", [9], k=10)

See the README's "Python API" section.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# public name -> the module defining it
_EXPORTS = {
    "load": "cdrec.models.persist",
    "load_sample": "cdrec.data.catalog",
    "read_douban": "cdrec.data.readers",
    "read_table": "cdrec.data.readers",
    "read_amazon_implicit_pair": "cdrec.data.readers",
    "read_amazon_ratings_csv": "cdrec.data.readers",
    "read_amazon_json": "cdrec.data.readers",
    "read_recbole": "cdrec.data.recbole",
    "CrossDomainData": "cdrec.data.dataset",
    "build_scenario": "cdrec.scenarios",
    "scenario_names": "cdrec.scenarios",
    "build_model": "cdrec.models",
    "available_models": "cdrec.models",
    "Recommender": "cdrec.models.recommender",
    "FitContext": "cdrec.train",
    "seed_everything": "cdrec.train",
}
_RENAMED = {"load": "load_model"}

__all__ = [
    "CrossDomainData",
    "FitContext",
    "Recommender",
    "available_models",
    "build_model",
    "build_scenario",
    "load",
    "load_sample",
    "read_amazon_implicit_pair",
    "read_amazon_json",
    "read_amazon_ratings_csv",
    "read_douban",
    "read_recbole",
    "read_table",
    "scenario_names",
    "seed_everything",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cdrec' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
