"""The scenario registry: a name per evaluation protocol, its typed parameters, and the
``Split`` it builds. Adding a scenario is one module in ``cdrec/scenarios/`` that defines a
dataclass and decorates it with :func:`register_scenario` (the package imports every module).

A scenario class is a frozen dataclass: its fields are the protocol's parameters (types checked
by pydantic when built from a config, so a wrong type or unknown key is refused before any data
is read, naming the key), ``__post_init__`` checks their ranges, and ``split(data, seed)``
returns the ``Split``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from cdrec.data.dataset import CrossDomainData
from cdrec.split import Split


class Scenario(Protocol):
    """What the runner needs of a scenario."""

    name: ClassVar[str]

    def split(self, data: CrossDomainData, seed: int) -> Split: ...


_SCENARIOS: dict[str, type] = {}
S = TypeVar("S", bound=type)


def register_scenario(cls: S) -> S:
    """Class decorator: make a scenario buildable by its ``name`` from configs. Unknown keys are
    refused when it is built from a config (``extra='forbid'``)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute name: ClassVar[str]")
    if name in _SCENARIOS and _SCENARIOS[name] is not cls:
        raise ValueError(f"scenario name {name!r} is already registered by {_SCENARIOS[name]}")
    # Too dynamic for mypy: pydantic reads this dunder off any dataclass; ``type`` declares none.
    cls.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    _SCENARIOS[name] = cls
    return cls


def scenario_names() -> list[str]:
    return sorted(_SCENARIOS)


def scenario_class(kind: str) -> type:
    if kind not in _SCENARIOS:
        raise ValueError(f"unknown scenario {kind!r}; available: {', '.join(scenario_names())}")
    return _SCENARIOS[kind]


def build_scenario(kind: str, params: dict[str, Any] | None = None) -> Scenario:
    """The scenario ``kind`` with ``params`` validated (types, unknown keys, ranges); a
    ``ValueError`` names the scenario and the offending key."""
    cls = scenario_class(kind)
    try:
        scenario: Scenario = TypeAdapter(cls).validate_python(dict(params or {}))
    except ValidationError as err:
        problems = "; ".join(dict.fromkeys(_describe(e) for e in err.errors()))
        raise ValueError(f"scenario {kind!r}: {problems}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"scenario {kind!r}: {err}") from None
    return scenario


def _describe(error: Any) -> str:
    # pydantic's locations include union-member tags such as "json-or-python[...]": keep the
    # field names and list positions a user wrote.
    loc = [str(p) for p in error["loc"] if isinstance(p, int) or "[" not in str(p)]
    where = ".".join(["params", *loc]) + ": " if loc else ""
    return f"{where}{error['msg']}"
