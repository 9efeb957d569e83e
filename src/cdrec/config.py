"""The run config: its schema (pydantic, unknown keys refused), loading from YAML with
``key.sub=value`` overrides and sweeps, the data it names, and the fingerprint of what one
(model, seed) result depends on. ``cdrec.runner`` and ``cdrec.tune`` both read configs through
this module, so neither depends on the other's internals.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdrec.data.dataset import CrossDomainData
from cdrec.models import available_models
from cdrec.scenarios import Scenario, build_scenario
from cdrec.search_space import SearchSpace


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """Where the data is and how to read it. ``path: sample:douban`` is the shipped sample."""

    format: Literal["douban", "amazon_implicit", "table", "amazon_ratings", "amazon_json"]
    path: str | None = None
    domains: list[str] | None = None
    files: dict[str, str] | None = None
    columns: dict[str, str] | None = None
    rating_scale: tuple[float, float] | None = (1.0, 5.0)
    k_core: int | None = Field(None, ge=1)


class ScenarioSpec(_Strict):
    """Which evaluation protocol (a registered scenario) and its parameters, validated here,
    before any data is read."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_scenario(self) -> ScenarioSpec:
        build_scenario(self.kind, self.params)  # raises ValueError naming the key
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
        known = available_models()
        for label, params in models.items():
            name = (params or {}).get("model", label)
            if name not in known:
                raise ValueError(f"model {label!r}: unknown model {name!r}; available: "
                                 f"{', '.join(known)}")
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
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        set_dotted(raw, key.strip(), yaml.safe_load(value))
    sweep = raw.pop("sweep", None) or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ValueError(f"invalid config {path}: sweep must map dotted keys to non-empty lists")
    configs = []
    for values in itertools.product(*sweep.values()):
        point = copy.deepcopy(raw)
        parts = []
        for key, value in zip(sweep, values, strict=True):
            keys = [k.strip() for k in key.split(",")]
            # "a.x,a.y": [[x1, y1], [x2, y2]] sweeps the keys together
            if len(keys) > 1 and (not isinstance(value, list) or len(value) != len(keys)):
                raise ValueError(f"invalid config {path}: sweep {key!r} needs lists of "
                                     f"{len(keys)} values, got {value!r}")
            for k, v in zip(keys, value if len(keys) > 1 else [value], strict=True):
                set_dotted(point, k, v)
                shown = "+".join(map(str, v)) if isinstance(v, list) else v
                parts.append(f"{k.rsplit('.', 1)[-1]}={shown}")
        if parts:
            point["name"] = f"{point.get('name', 'run')}/{','.join(parts)}"
        try:
            configs.append(RunConfig.model_validate(point))
        except ValidationError as err:
            raise ValueError(f"invalid config {path}:\n{err}") from None
    return configs


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    for part in parts[:-1]:
        node = tree.get(part)
        if node is None:
            node = tree[part] = {}
        if not isinstance(node, dict):
            raise TypeError(f"override {key!r}: {part!r} is not a mapping")
        tree = node
    tree[parts[-1]] = value


def load_data(spec: DataSpec) -> CrossDomainData:
    """Read the dataset a config names, with its options applied."""
    from cdrec.data import readers
    from cdrec.data.catalog import sample_path
    from cdrec.data.transforms import k_core

    path: Path | None = None
    if spec.path is not None:
        path = sample_path(spec.path.split(":", 1)[1]) if spec.path.startswith("sample:") \
            else Path(spec.path)
        if not path.exists():
            raise FileNotFoundError(
                f"data path {path} does not exist (relative paths are read from the current "
                f"directory, {Path.cwd()}); override it with data.path=DIR")
    files = spec.files or {}
    if spec.format == "douban":
        data = readers.read_douban(_require(path, spec.format),
                                   domains=tuple(spec.domains or ("book", "music")),
                                   rating_scale=spec.rating_scale)
    elif spec.format == "amazon_implicit":
        root = _require(path, spec.format)
        if not spec.domains or len(spec.domains) != 2:
            raise ValueError("amazon_implicit needs domains: [a, b] naming the pair folder a_b")
        data = readers.read_amazon_implicit_pair(root, spec.domains[0], spec.domains[1])
    elif spec.format == "table":
        source = ({k: _under(path, v) for k, v in files.items()} if files
                  else _require(path, spec.format))
        # The column roles (user, item, rating, timestamp, domain) as read_table's keywords.
        roles: dict[str, Any] = spec.columns or {}
        data = readers.read_table(source, rating_scale=spec.rating_scale, **roles)
    elif spec.format == "amazon_ratings":
        data = readers.read_amazon_ratings_csv({k: _under(path, v) for k, v in files.items()})
    else:
        data = readers.read_amazon_json({k: _under(path, v) for k, v in files.items()})
    if spec.k_core:
        data = k_core(data, spec.k_core)
    return data


def _require(path: Path | None, fmt: str) -> Path:
    """``path``, which format ``fmt`` cannot do without."""
    if path is None:
        raise ValueError(f"data format {fmt!r} needs data.path")
    return path


def _under(root: Path | None, name: str) -> Path:
    return root / name if root is not None else Path(name)


def fingerprint(config: RunConfig, model_params: dict[str, Any], seed: int | list[int]) -> str:
    """Hash of what one (model, seed) result depends on: data, scenario, the model's resolved
    hyper-parameters and the seed (not the device, progress bars or the other models)."""
    what = {"data": config.data.model_dump(mode="json"),
            "scenario": config.scenario.model_dump(mode="json"),
            "model": model_params, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
