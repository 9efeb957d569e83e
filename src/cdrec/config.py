"""The run config: its schema (pydantic, unknown keys refused), loading from YAML with
``key.sub=value`` overrides and sweeps, the data it names, and the fingerprint of what one
(model, seed) result depends on. ``cdrec.runner`` and ``cdrec.tune`` both read configs through
this module, so neither depends on the other's internals.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cdrec.data.dataset import CrossDomainData
from cdrec.data.features import DomainFeatures
from cdrec.models import available_models, build_model
from cdrec.scenarios import Scenario, build_scenario, scenario_class, scenario_names
from cdrec.search_space import SearchSpace
from cdrec.tracking import TrackingConfig

# The column roles ``data.columns`` may map (read_table's keywords).
COLUMN_ROLES = ("user", "item", "rating", "timestamp", "domain")
# Top-level keys whose overrides do not change a run's results (where it is written, on which
# device, how it reports, how often it checkpoints, what `cdrec tune` searches): a CLI override
# of these keeps the run's name; any other override names a run directory of its own.
SAME_RESULTS_KEYS = frozenset({"name", "output_dir", "device", "progress", "threads",
                               "interop_threads", "checkpoint_every", "checkpoint_seconds",
                               "save_models", "tracking", "tune", "defs", "sweep"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Keys that describe how one source is read: a ``format: multi`` section sets them per source.
SOURCE_KEYS = ("path", "domains", "files", "columns", "header", "rating_scale", "mixed_ids",
               "duplicates")


class DataSpec(_Strict):
    """Where the data is and how to read it. ``path: sample:douban`` is the shipped sample.

    ``format: multi`` reads several ``sources``, each a data section of its own (any other
    format, with its own path, domains, files and columns), and combines their domains into one
    dataset with :func:`cdrec.data.readers.combine_sources`: users are matched by their original
    ids across sources, a domain comes from one source only, and ids must be of one type (all
    integers or all text) in every source. ``k_core`` and ``features`` of a multi section apply
    to the combined data (feature paths relative to the current directory); the keys of
    :data:`SOURCE_KEYS` belong to the sources. Sources do not nest and carry no features (user
    feature rows follow the user index, which combining changes).
    """

    format: Literal["douban", "amazon_implicit", "table", "amazon_ratings", "amazon_json",
                    "recbole", "multi"]
    path: str | None = None
    domains: list[str] | None = None
    files: dict[str, str | list[str]] | None = Field(None, description=(
        "domain -> file (under data.path); format table also takes a list of files, whose rows "
        "are concatenated in the order given into the domain"))
    columns: dict[str, str | int] | None = None
    header: bool = Field(True, description=(
        "format table: false reads delimited files without a header line; data.columns then "
        "gives user, item and rating as 0-based positions"))
    rating_scale: tuple[float, float] | None = (1.0, 5.0)
    k_core: int | None = Field(None, ge=1)
    mixed_ids: Literal["warn", "error"] = Field("warn", description=(
        "text ids among integer ids make every id text (which changes seeded splits): warn "
        "naming the first such row, or refuse the data"))
    duplicates: Literal["last", "first", "error"] = Field("last", description=(
        "formats table and douban: a (user, item) pair repeated in a domain (in a file or "
        "across a domain's files) keeps its last row or its first (files in the order given), "
        "with a warning counting the rows dropped, or is refused (error) naming both rows"))
    sources: list[DataSpec] | None = Field(None, description=(
        "format multi: the data sections combined into one dataset, users matched by their "
        "original ids (see docs/data_formats.md)"))
    features: dict[str, DomainFeatures] = Field(default_factory=dict, description=(
        "per domain, optional user and item feature files: {users: {path, id_column, "
        "categorical, numeric, ...}, items: {...}}; relative paths are read in data.path's "
        "folder (see docs/data_formats.md)"))

    @field_validator("sources", mode="before")
    @classmethod
    def _flat_sources(cls, sources: Any) -> Any:
        # Before each source is validated, whose own errors would be about nesting's details.
        if isinstance(sources, list):
            nested = [i for i, s in enumerate(sources)
                      if isinstance(s, dict) and s.get("format") == "multi"]
            if nested:
                raise ValueError("\n".join(f"data.sources.{i}: sources do not nest; list its "
                                           f"sources in data.sources" for i in nested))
        return sources

    def declared_domains(self) -> list[str] | None:
        """The domains this section reads, when it says so before any file is read (files,
        domains, douban's default pair, a multi section's sources); else ``None``."""
        if self.format == "multi":
            lists = [source.declared_domains() for source in self.sources or []]
            return None if any(d is None for d in lists) else [d for ds in lists if ds
                                                                for d in ds]
        known = list(self.files) if self.files else list(self.domains or [])
        if self.format == "douban" and not known:
            known = ["book", "music"]
        return known or None

    @model_validator(mode="after")
    def _known_feature_domains(self) -> DataSpec:
        known = self.declared_domains()
        if not known:
            return self
        problems = [f"data.features: unknown domain {key!r}{_did_you_mean(key, known)}; the "
                    f"domains are {', '.join(known)}" for key in self.features if key not in known]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _known_columns(self) -> DataSpec:
        if self.columns is None:
            return self
        if self.format not in ("table", "recbole"):
            raise ValueError(f"data.columns: only formats 'table' and 'recbole' map columns; "
                             f"format {self.format!r} has fixed columns")
        problems = [f"data.columns: unknown column role {key!r}{_did_you_mean(key, COLUMN_ROLES)}"
                    f"; accepted: {', '.join(COLUMN_ROLES)}"
                    for key in self.columns if key not in COLUMN_ROLES]
        if problems:
            raise ValueError("\n".join(problems))
        positions = [key for key, value in self.columns.items() if isinstance(value, int)]
        if positions and self.header:
            raise ValueError(f"data.columns: {', '.join(positions)} given as a position; "
                             f"0-based positions are for files without a header (header: "
                             f"false), else name the header's column")
        return self

    @model_validator(mode="after")
    def _layout(self) -> DataSpec:
        problems = self._multi_problems() if self.format == "multi" else self._source_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _source_problems(self) -> list[str]:
        problems = []
        if not self.header:
            if self.format != "table":
                problems.append(f"data.header: only format 'table' reads files without a "
                                f"header; format {self.format!r} knows its files' layout")
            else:
                given = self.columns or {}
                lacking = [role for role in dict.fromkeys(["user", "item", "rating", *given])
                           if not isinstance(given.get(role), int)]
                if lacking:
                    problems.append(
                        f"data.columns: header: false needs the 0-based position of "
                        f"{', '.join(lacking)} (e.g. columns: {{user: 0, item: 1, rating: 2}})")
        if self.files and self.format != "table":
            listed = [dom for dom, value in self.files.items() if isinstance(value, list)]
            if listed:
                problems.append(f"data.files: only format 'table' reads a domain from a list "
                                f"of files ({', '.join(listed)}); give one file per domain")
        if self.duplicates != "last" and self.format not in ("table", "douban"):
            problems.append(f"data.duplicates: formats 'table' and 'douban' take it; format "
                            f"{self.format!r} keeps the last row of a repeated pair")
        if self.sources is not None:
            problems.append(f"data.sources: only format 'multi' combines sources; format "
                            f"{self.format!r} reads one")
        return problems

    def _multi_problems(self) -> list[str]:
        sources = self.sources or []
        problems = []
        if len(sources) < 2:
            problems.append(f"data.sources: format 'multi' combines two or more sources, got "
                            f"{len(sources)}")
        given = [key for key in SOURCE_KEYS if key in self.model_fields_set]
        if given:
            are = "is a key" if len(given) == 1 else "are keys"
            problems.append(f"data: {', '.join(given)} {are} of each source of format 'multi' "
                            f"(data.sources.N.{given[0]}), not of the multi section")
        owner: dict[str, int] = {}
        for i, source in enumerate(sources):
            where = f"data.sources.{i}"
            if source.features:
                problems.append(f"{where}.features: give features in the multi section (data."
                                f"features), read after the sources are combined")
            for dom in source.declared_domains() or []:
                if dom in owner:
                    first = owner[dom]
                    problems.append(
                        f"{where}: domain {dom!r} is also given by data.sources.{first} "
                        f"({_source_place(sources[first])}); a domain comes from one source "
                        f"(list several files for it there), so rename one")
                else:
                    owner[dom] = i
        return problems


def _source_place(spec: DataSpec) -> str:
    """A source as messages name it: its format, path and files."""
    files = ", ".join(f"{dom}: {v if isinstance(v, str) else ' + '.join(v)}"
                      for dom, v in (spec.files or {}).items())
    place = " ".join(part for part in (spec.path, files and f"{{{files}}}") if part)
    return f"{spec.format}{' ' + place if place else ''}"


class ScenarioSpec(_Strict):
    """Which evaluation protocol (a registered scenario) and its parameters, validated here,
    before any data is read."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_scenario(self) -> ScenarioSpec:
        names = scenario_names()
        if self.kind not in names:
            raise ValueError(f"scenario.kind: unknown scenario {self.kind!r}"
                             f"{_did_you_mean(self.kind, names)}; available: {', '.join(names)}")
        cls = scenario_class(self.kind)
        accepted = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = [key for key in self.params if key not in accepted]
        if unknown:
            raise ValueError("\n".join(
                f"scenario.params: unknown parameter {key!r} of scenario {self.kind!r}"
                f"{_did_you_mean(key, accepted)}; accepted: {', '.join(accepted)}"
                for key in unknown))
        try:
            TypeAdapter(cls).validate_python(dict(self.params))  # types, then ranges
        except ValidationError as err:
            raise ValueError("\n".join(describe_errors(err, cls, ("scenario", "params")))) \
                from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"scenario.params: {err}") from None
        return self

    def build(self) -> Scenario:
        return build_scenario(self.kind, self.params)


class RunConfig(_Strict):
    name: str
    data: DataSpec
    scenario: ScenarioSpec
    models: dict[str, dict[str, Any]]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    device: str = "cpu"
    output_dir: str = "runs"
    progress: bool = True
    threads: int | None = Field(None, ge=1, description=(
        "intra-op threads of each process (torch.set_num_threads); null: torch's default, one "
        "per core"))
    interop_threads: int | None = Field(None, ge=1, description=(
        "inter-op threads (torch.set_num_interop_threads); null: torch's default"))
    checkpoint_every: int = Field(1, ge=1, description=(
        "epochs between the checkpoints --resume continues from (a stage's end is always "
        "written)"))
    checkpoint_seconds: float = Field(30.0, ge=0, description=(
        "and at least this many seconds apart (0: every checkpoint_every epochs); on small data "
        "a checkpoint costs more than the epoch it saves"))
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(), description=(
        "experiment tracking: MLflow and TensorBoard (see cdrec.tracking)"))
    save_models: bool = Field(True, description=(
        "write each fitted (model, seed) to models/<label>_seed<seed>.pt in the run directory, "
        "for `cdrec recommend` and cdrec.load (false for big sweeps)"))
    tune: dict[str, SearchSpace] = Field(default_factory=dict, description=(
        "per model label, the search space of `cdrec tune` (see cdrec.tune)"))
    defs: dict[str, Any] = Field(default_factory=dict, description=(
        "a place for YAML anchors (&name) that models reuse (*name); not read otherwise"))
    compare: list[tuple[str, str]] = Field(default_factory=list, description=(
        "(model, baseline) label pairs tested head to head in results.md"))

    @model_validator(mode="after")
    def _named_models_exist(self) -> RunConfig:
        for section, labels in (("tune", set(self.tune)),
                                ("compare", {label for pair in self.compare for label in pair})):
            unknown = sorted(labels - set(self.models))
            if unknown:
                raise ValueError(f"{section}: names {', '.join(unknown)}, not among the models "
                                 f"({', '.join(self.models)})")
        return self

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Every model is built here, so a bad parameter fails when the config is read, not
        # after the data is (runner and tune build them again from the same values).
        known = available_models()
        problems = []
        for label, given in models.items():
            params = dict(given or {})
            name = params.pop("model", label)
            where = f"models.{label}" + ("" if name == label else f" (model {name})")
            if name not in known:
                problems.append(f"{where}: unknown model {name!r}{_did_you_mean(name, known)}; "
                                f"available: {', '.join(known)}")
                continue
            try:
                build_model(name, **params)
            except ValidationError as err:
                problems += [f"{where}: {line}" for line in model_problems(name, params, err)]
            except KeyError as err:  # e.g. an unknown base: the message is its first argument
                problems.append(f"{where}: {err.args[0] if err.args else err}")
            except (TypeError, ValueError) as err:
                problems.append(f"{where}: {err}")
        if problems:
            raise ValueError("\n".join(problems))
        return models

    def model_params(self, label: str) -> tuple[str, dict[str, Any]]:
        params = dict(self.models[label] or {})
        return params.pop("model", label), params


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML).

    A config with a ``sweep`` is refused here: use :func:`load_configs`.
    """
    configs = load_configs(path, overrides)
    if len(configs) != 1:
        raise ValueError(f"{path} sweeps over {len(configs)} runs; use load_configs")
    return configs[0]


def load_configs(path: str | Path, overrides: list[str] | None = None) -> list[RunConfig]:
    """One config per point of the file's optional ``sweep`` (``{dotted.key: [values]}``, the
    product of all lists; a key ``a.x,a.y`` with values ``[[x1, y1], ...]`` moves the keys
    together), each named ``<name>/<key>=<value>...`` so runs sit side by side."""
    return [config for _, config in load_sweep(path, overrides)]


def load_sweep(path: str | Path, overrides: list[str] | None = None
               ) -> list[tuple[dict[str, Any], RunConfig]]:
    """:func:`load_configs` with each config's sweep point, ``{dotted key: value}`` (empty for
    a config without a sweep), for the sweep's summary table and figure."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise TypeError(f"{path}: a config is a mapping of keys (name, data, scenario, ...), "
                         f"got {type(raw).__name__}")
    applied: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        key = key.strip()
        parsed = yaml.safe_load(value)
        set_dotted(raw, key, parsed)
        applied.pop(key, None)  # the last value of a key counts, in the order given
        applied[key] = parsed
    if isinstance(raw.get("name"), str) and "name" not in applied:
        raw["name"] = override_name(raw["name"], applied)
    sweep = raw.pop("sweep", None) or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ValueError(f"invalid config {path}: sweep must map dotted keys to non-empty lists")
    configs: list[tuple[dict[str, Any], RunConfig]] = []
    for values in itertools.product(*sweep.values()):
        point = copy.deepcopy(raw)
        parts = []
        assigned: dict[str, Any] = {}
        for key, value in zip(sweep, values, strict=True):
            keys = [k.strip() for k in key.split(",")]
            # "a.x,a.y": [[x1, y1], [x2, y2]] sweeps the keys together
            if len(keys) > 1 and (not isinstance(value, list) or len(value) != len(keys)):
                raise ValueError(f"invalid config {path}: sweep {key!r} needs lists of "
                                     f"{len(keys)} values, got {value!r}")
            for k, v in zip(keys, value if len(keys) > 1 else [value], strict=True):
                set_dotted(point, k, v)
                assigned[k] = v
                shown = "+".join(map(str, v)) if isinstance(v, list) else v
                parts.append(f"{k.rsplit('.', 1)[-1]}={shown}")
        if parts:
            point["name"] = f"{point.get('name', 'run')}/{','.join(parts)}"
        try:
            configs.append((assigned, RunConfig.model_validate(point)))
        except ValidationError as err:
            raise ValueError("\n".join(f"{path}: {line}"
                                       for line in describe_errors(err, RunConfig))) from None
    return configs


def override_name(name: str, overrides: dict[str, Any]) -> str:
    """The run name of ``name`` under ``key.sub=value`` overrides (parsed values, in order).

    Overrides that can change results give the run a directory of its own,
    ``<name>+<key>=<value>,...`` (``+<8 hex digits>``, a hash of them, when that would be long
    or hold characters unfit for a directory name), so a run with ``seeds=[0]`` does not
    overwrite the full run's results and the same overrides find the same directory again
    (``--resume``). Overrides of :data:`SAME_RESULTS_KEYS` (``device``, ``progress``,
    ``output_dir``, ...) keep the name; an explicit ``name=`` override is used as given.
    """
    relevant = [(key, value) for key, value in overrides.items()
                if key.split(".", 1)[0] not in SAME_RESULTS_KEYS]
    if not relevant:
        return name
    shown = [_plain(value) for _, value in relevant]
    readable = ",".join(f"{key}={text}" for (key, _), text in zip(relevant, shown, strict=True))
    if (all(text is not None for text in shown) and len(readable) <= 60
            and all(_SAFE.fullmatch(key) for key, _ in relevant)):
        return f"{name}+{readable}"
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode())
    return f"{name}+{digest.hexdigest()[:8]}"


_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def _plain(value: Any) -> str | None:
    """``value`` as directory-name text when it reads back unambiguously, else ``None``: a
    number, a bool, null, a plain word, or a list of those (joined by ``+``, as sweeps are)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if _SAFE.fullmatch(value) else None
    if isinstance(value, list) and value and not any(isinstance(v, list | dict) for v in value):
        parts = [_plain(v) for v in value]
        return "+".join(p for p in parts if p is not None) if None not in parts else None
    return None


def model_problems(name: str, params: dict[str, Any], err: ValidationError) -> list[str]:
    """``build_model(name, **params)``'s pydantic errors as lines such as ``unknown parameter
    'lrr' (did you mean 'lr'?); accepted: ...`` or ``epochs: Input should be ... (got 0)``."""
    cls = available_models()[name]
    own: dict[str, Any] = dict(cls.Config.model_fields)

    def settings_of(holder: str) -> dict[str, Any]:
        # A nested settings dict (a transfer method's base_config) is validated by the base's
        # own config class, whose errors arrive without the holder's name in their location.
        if holder != "base_config":
            return {}
        from cdrec.models.bases.registry import base_class

        merged = {**getattr(cls, "variant_defaults", {}), **params}
        default = own["base"].default if "base" in own else None
        try:
            return dict(base_class(str(merged.get("base", default))).Config.model_fields)
        except KeyError:
            return {}

    lines = []
    for error in err.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        holder = [] if not loc or loc[0] in own or loc[0] in params else [
            key for key, value in params.items() if isinstance(value, dict) and loc[0] in value][:1]
        fields = settings_of(holder[0]) if holder else own
        if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            path = ".".join(holder + loc[:-1])
            accepted = sorted(fields)
            listed = (f"; accepted: {', '.join(accepted)}" if accepted
                      else "" if holder else "; it takes none")
            lines.append(f"{path + ': ' if path else ''}unknown parameter {loc[-1]!r}"
                         f"{_did_you_mean(loc[-1], accepted)}{listed}")
            continue
        key = ".".join(holder + loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        got = "" if error["type"] == "missing" else f" (got {_show(error.get('input'))})"
        lines.append(f"{key + ': ' if key else ''}{message}{got}")
    return lines


def _did_you_mean(word: str, choices: Sequence[str] | dict[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_errors(err: ValidationError, root: type, prefix: tuple[str, ...] = ()) -> list[str]:
    """pydantic's errors as one line each: ``<dotted.key>: <problem>``; an unknown key lists
    the keys accepted there. ``root`` is the validated class (a pydantic model or dataclass),
    ``prefix`` the location of its value in the config."""
    errors = err.errors(include_url=False)
    # In a union (a search range or a list), keep the member that matched the input's shape:
    # drop "should be a valid list" beside the errors of the range the user wrote.
    tagged: dict[tuple[str, ...], set[str]] = {}
    for error in errors:
        loc = [str(p) for p in error["loc"]]
        cut = next((i for i, p in enumerate(loc) if "[" in p), None)
        if cut is not None:
            tagged.setdefault(tuple(loc[:cut]), set()).add(loc[cut])
    lines = []
    for error in errors:
        loc = [str(p) for p in error["loc"]]
        cut = next((i for i, p in enumerate(loc) if "[" in p), None)
        if (cut is not None and len(tagged[tuple(loc[:cut])]) > 1 and len(loc) == cut + 1
                and str(error["type"]).endswith("_type")):
            continue
        keys = [*prefix, *(p for p in loc if "[" not in p)]
        where = ".".join(keys)
        kind = error["type"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            accepted = _fields_at(root, loc[:-1])
            section = ".".join(keys[:-1]) or "top level"
            listed = f"; accepted: {', '.join(accepted)}" if accepted else ""
            lines.append(f"{section}: unknown key {keys[-1]!r}"
                         f"{_did_you_mean(keys[-1], accepted)}{listed}")
        elif kind == "missing":
            lines.append(f"{where}: required, not given")
        elif kind in ("value_error", "assertion_error") and "error" in error.get("ctx", {}):
            # Our validators' messages start with their location; others get the key first.
            # A section nested in a list of its kind (data.sources.1) writes its messages as the
            # top-level one would (data.columns): they are moved under its location.
            top = keys[0] if keys else ""
            entry = max((i for i, key in enumerate(keys) if key.isdigit()), default=None)
            base = "" if entry is None else ".".join(keys[:entry + 1])
            for line in str(error["ctx"]["error"]).splitlines():
                if base and line.startswith((f"{top}.", f"{top}:")) \
                        and not line.startswith(base):
                    line = base + line[len(top):]
                located = line.startswith(where) if where else True
                lines.append(line if located else f"{where}: {line}")
        else:
            lines.append(f"{where}: {error['msg']} (got {_show(error.get('input'))})")
    return lines


def _fields_at(root: Any, loc: Sequence[str]) -> list[str]:
    """The keys accepted at ``loc`` inside ``root`` (pydantic models, dataclasses, dicts and
    unions walked by their annotations); empty when it cannot tell."""
    node: Any = root
    for part in loc:
        origin, args = get_origin(node), get_args(node)
        if origin in (Union, types.UnionType):  # the member pydantic names in its tag
            named = [a for a in args if isinstance(a, type) and a.__name__ in part]
            lists = [a for a in args if get_origin(a) is list]
            if named:
                node = named[0]
            elif part.isdigit() and len(lists) == 1:  # Optional[list[X]]: entry `part`
                node = get_args(lists[0])[0]
            else:
                return []
            continue
        if origin is list and part.isdigit():
            node = args[0] if args else Any
            continue
        if origin is dict:
            node = args[1] if len(args) == 2 else Any
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return []
            node = field.annotation
            continue
        if dataclasses.is_dataclass(node):
            found = _dataclass_types(node)
            if part not in found:
                return []
            node = found[part]
            continue
        return []
    # Optional[Model]: the model (or dataclass)
    if get_origin(node) in (Union, types.UnionType):
        members = [a for a in get_args(node) if isinstance(a, type) and (
            issubclass(a, BaseModel) or dataclasses.is_dataclass(a))]
        node = members[0] if len(members) == 1 else node
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node) if f.init]
    return []


def _dataclass_types(node: Any) -> dict[str, Any]:
    """A dataclass's field types, resolved when its module wrote them as strings."""
    try:
        hints = typing.get_type_hints(node)
    except (NameError, TypeError):
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(node)}


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way; a
    number picks an entry of a list (``data.sources.1.path``)."""
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise TypeError(f"override {key!r}: {part!r} is not an index of the "
                                f"{len(node)}-entry list {'.'.join(parts[:i])}")
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise TypeError(f"override {key!r}: {parts[i - 1]!r} is not a mapping")
        if last:
            node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]


def load_data(spec: DataSpec) -> CrossDomainData:
    """Read the dataset a config names, with its options applied."""
    return _load_data(spec, "data")


def _load_data(spec: DataSpec, where: str) -> CrossDomainData:
    """:func:`load_data` of the section at ``where`` (``data``, ``data.sources.1``, ...)."""
    from cdrec.data import readers
    from cdrec.data.catalog import sample_path
    from cdrec.data.features import with_features
    from cdrec.data.transforms import k_core

    path: Path | None = None
    if spec.path is not None:
        path = sample_path(spec.path.split(":", 1)[1]) if spec.path.startswith("sample:") \
            else Path(spec.path)
        if not path.exists():
            name = "data path" if where == "data" else f"{where}.path:"
            raise FileNotFoundError(
                f"{name} {path} does not exist (relative paths are read from the current "
                f"directory, {Path.cwd()}); override it with {where}.path=DIR")
    files = spec.files or {}
    if spec.format == "multi":
        parts = [_load_data(source, f"{where}.sources.{i}")
                 for i, source in enumerate(spec.sources or [])]
        labels = [f"{where}.sources.{i} {readers.source_label(part)}"
                  for i, part in enumerate(parts)]
        data = readers.combine_sources(parts, labels=labels)
    elif spec.format == "douban":
        data = readers.read_douban(_require(path, spec.format, where),
                                   domains=tuple(spec.domains or ("book", "music")),
                                   rating_scale=spec.rating_scale, mixed_ids=spec.mixed_ids,
                                   duplicates=spec.duplicates)
    elif spec.format == "amazon_implicit":
        root = _require(path, spec.format, where)
        if not spec.domains or len(spec.domains) != 2:
            raise ValueError("amazon_implicit needs domains: [a, b] naming the pair folder a_b")
        data = readers.read_amazon_implicit_pair(root, spec.domains[0], spec.domains[1],
                                                 mixed_ids=spec.mixed_ids)
    elif spec.format == "table":
        source = ({k: _under(path, v) if isinstance(v, str) else [_under(path, f) for f in v]
                   for k, v in files.items()} if files
                  else _require(path, spec.format, where))
        # The column roles (user, item, rating, timestamp, domain) as read_table's keywords.
        roles: dict[str, Any] = spec.columns or {}
        data = readers.read_table(source, rating_scale=spec.rating_scale, header=spec.header,
                                  mixed_ids=spec.mixed_ids, duplicates=spec.duplicates, **roles)
    elif spec.format == "recbole":
        from cdrec.data.recbole import read_recbole, recbole_fields

        # path: RecBole-CDR's data_path (or one .inter file); files: domain -> dataset folder
        # or .inter file under it.
        inter = ({k: _under(path, _one(v)) for k, v in files.items()} if files
                 else _require(path, spec.format, where))
        data = read_recbole(inter, domains=spec.domains, rating_scale=spec.rating_scale,
                            **recbole_fields({k: str(v) for k, v in (spec.columns or {}).items()}))
    elif spec.format == "amazon_ratings":
        data = readers.read_amazon_ratings_csv({k: _under(path, _one(v))
                                                for k, v in files.items()})
    else:
        data = readers.read_amazon_json({k: _under(path, _one(v)) for k, v in files.items()})
    if spec.features:
        # Relative feature paths: in data.path's folder (data.path itself when a folder).
        folder = None if path is None else path if path.is_dir() else path.parent
        data = with_features(data, spec.features, root=folder)
    if spec.k_core:
        data = k_core(data, spec.k_core)
    return data


def _require(path: Path | None, fmt: str, where: str = "data") -> Path:
    """``path``, which format ``fmt`` cannot do without."""
    if path is None:
        raise ValueError(f"data format {fmt!r} needs {where}.path")
    return path


def _under(root: Path | None, name: str) -> Path:
    return root / name if root is not None else Path(name)


def _one(value: str | list[str]) -> str:
    """A file of a format that reads one file per domain (lists are refused by DataSpec)."""
    assert isinstance(value, str)
    return value


def _data_identity(spec: DataSpec) -> dict[str, Any]:
    """What of a data section a run's results depend on, for :func:`fingerprint`.

    ``mixed_ids`` only decides whether odd data is refused, never what a run computes. Keys
    added later are left out at their defaults (no features, header, ``duplicates: last``, no
    sources), so fingerprints of runs from before they existed still hold.
    """
    defaults = {"features": {}, "header": True, "duplicates": "last", "sources": None}
    skip = {"mixed_ids", "sources"} | {key for key, value in defaults.items()
                                       if getattr(spec, key) == value}
    what = spec.model_dump(mode="json", exclude=skip)
    if spec.sources is not None:
        what["sources"] = [_data_identity(source) for source in spec.sources]
    return what


def fingerprint(config: RunConfig, model_params: dict[str, Any], seed: int | list[int]) -> str:
    """Hash of what one (model, seed) result depends on: data, scenario, the model's resolved
    hyper-parameters and the seed (not the device, progress bars or the other models)."""
    what = {"data": _data_identity(config.data),
            "scenario": config.scenario.model_dump(mode="json"),
            "model": model_params, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
