"""Config -> dataset -> scenario -> models x seeds -> results on disk.

A run directory ``runs/<name>/`` holds: ``config.yaml`` (the resolved config, every model's full
hyper-parameters included), ``results.json`` (``{model: {metric: {mean, std, per_seed}}}``),
``results.md`` (the table, with significance marks), ``significance.json``, ``per_user.parquet``
(each test user's metrics per model and seed), ``history.csv`` and ``curves.png`` (training
curves), and ``seeds/`` + ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdrec.data.dataset import CrossDomainData
from cdrec.models.base import available_models, build_model
from cdrec.models.bases import BaseCache
from cdrec.scenarios.base import Split
from cdrec.train import FitContext, resolve_device, seed_everything
from cdrec.tune import SearchSpace


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
    kind: Literal["coldstart", "leave_one_out", "kfold_rating"]
    params: dict[str, Any] = Field(default_factory=dict)


class RunConfig(_Strict):
    name: str
    data: DataSpec
    scenario: ScenarioSpec
    models: dict[str, dict[str, Any]]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    device: str = "cpu"
    output_dir: str = "runs"
    progress: bool = True
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
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
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
                _set_dotted(point, k, v)
                shown = "+".join(map(str, v)) if isinstance(v, list) else v
                parts.append(f"{k.rsplit('.', 1)[-1]}={shown}")
        if parts:
            point["name"] = f"{point.get('name', 'run')}/{','.join(parts)}"
        try:
            configs.append(RunConfig.model_validate(point))
        except ValidationError as err:
            raise ValueError(f"invalid config {path}:\n{err}") from None
    return configs


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
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
        _require(path, spec.format)
        data = readers.read_douban(path, domains=tuple(spec.domains or ("book", "music")),
                                   rating_scale=spec.rating_scale)
    elif spec.format == "amazon_implicit":
        _require(path, spec.format)
        if not spec.domains or len(spec.domains) != 2:
            raise ValueError("amazon_implicit needs domains: [a, b] naming the pair folder a_b")
        data = readers.read_amazon_implicit_pair(path, spec.domains[0], spec.domains[1])
    elif spec.format == "table":
        source = {k: _under(path, v) for k, v in files.items()} if files else path
        data = readers.read_table(source, rating_scale=spec.rating_scale,
                                  **(spec.columns or {}))
    elif spec.format == "amazon_ratings":
        data = readers.read_amazon_ratings_csv({k: _under(path, v) for k, v in files.items()})
    else:
        data = readers.read_amazon_json({k: _under(path, v) for k, v in files.items()})
    if spec.k_core:
        data = k_core(data, spec.k_core)
    return data


def _require(path: Path | None, fmt: str) -> None:
    if path is None:
        raise ValueError(f"data format {fmt!r} needs data.path")


def _under(root: Path | None, name: str) -> Path:
    return root / name if root is not None else Path(name)


def build_scenario(spec: ScenarioSpec):
    from cdrec.scenarios import SCENARIOS

    cls = SCENARIOS[spec.kind]
    try:
        return cls(**spec.params)
    except TypeError as err:
        raise ValueError(f"scenario {spec.kind!r}: {err}") from None


def run(config: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train and evaluate every model for every seed; write the run directory; return results."""
    from cdrec.report import plot_curves, significance_table, write_markdown

    device = resolve_device(config.device)
    out = Path(config.output_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    labels = list(config.models)
    resolved = config.model_dump()
    resolved["models"] = {}
    for label in labels:
        name, params = config.model_params(label)
        resolved["models"][label] = {"model": name, **build_model(name, **params).config.model_dump()}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    data = load_data(config.data)
    scenario = build_scenario(config.scenario)
    seed_dir = out / "seeds"
    seed_dir.mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    per_user: list[pd.DataFrame] = []
    history: list[dict[str, Any]] = []
    split_info: dict[int, Any] = {}
    for seed in config.seeds:
        split: Split = scenario.split(data, seed)
        split_info[seed] = split.info
        cache = BaseCache()  # models over the same base pretrain it once per split
        for label in labels:
            record_path = seed_dir / f"{_safe(label)}_seed{seed}.json"
            users_path = seed_dir / f"{_safe(label)}_seed{seed}.parquet"
            stamp = fingerprint(config, resolved["models"][label], seed)
            saved = json.loads(record_path.read_text()) if resume and record_path.exists() \
                else None
            if saved is not None and saved.get("fingerprint") == stamp and users_path.exists():
                record, users = saved, pd.read_parquet(users_path)
            else:
                checkpoints = _checkpoints(out, label, seed)
                stamp_file = checkpoints / "fingerprint.txt"
                stale_checkpoints = checkpoints.exists() and not (
                    stamp_file.exists() and stamp_file.read_text() == stamp)
                changed = saved is not None and saved.get("fingerprint") != stamp
                if changed or stale_checkpoints:
                    # Data, scenario or hyper-parameters changed since that result or that
                    # interrupted fit: resuming from it would mix two experiments under one name.
                    if resume:
                        print(f"{label} seed {seed}: its config changed since the saved run; "
                              "fitting it again")
                    shutil.rmtree(checkpoints, ignore_errors=True)
                checkpoints.mkdir(parents=True, exist_ok=True)
                stamp_file.write_text(stamp)
                record, users = _fit_one(config, label, seed, split, device, out, resume,
                                         cache)
                record["fingerprint"] = stamp
                record_path.write_text(json.dumps(record, indent=1))
                users.to_parquet(users_path, index=False)
            records.append(record)
            per_user.append(users)
            history.extend(record.get("history", []))

    results = aggregate(records)
    users_df = pd.concat(per_user, ignore_index=True)
    users_df.to_parquet(out / "per_user.parquet", index=False)
    names = {label: config.model_params(label)[0] for label in labels}
    signif = significance_table(users_df, results, names, main_metrics(users_df),
                                compare=config.compare)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "significance.json").write_text(json.dumps(signif, indent=1))
    (out / "splits.json").write_text(json.dumps(split_info, indent=1))
    table = write_markdown(out / "results.md", config.name, results, signif, split_info)
    if history:
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        plot_curves(pd.DataFrame(history), out / "curves.png")
    return {"results": results, "significance": signif, "table": table, "dir": str(out)}


def fingerprint(config: RunConfig, model_params: dict[str, Any], seed: int | list[int]) -> str:
    """Hash of what one (model, seed) result depends on: data, scenario, the model's resolved
    hyper-parameters and the seed (not the device, progress bars or the other models)."""
    what = {"data": config.data.model_dump(mode="json"),
            "scenario": config.scenario.model_dump(mode="json"),
            "model": model_params, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _checkpoints(out: Path, label: str, seed: int) -> Path:
    return out / "checkpoints" / _safe(label) / f"seed{seed}"


def _fit_one(config: RunConfig, label: str, seed: int, split: Split, device, out: Path,
             resume: bool, cache: BaseCache | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    name, params = config.model_params(label)
    seed_everything(seed)
    model = build_model(name, **params)
    context = FitContext(device=device, seed=seed, progress=config.progress,
                         checkpoint_dir=_checkpoints(out, label, seed),
                         resume=resume, label=f"{label} seed {seed}", base_cache=cache)
    t0 = time.perf_counter()
    model.fit(split.train, split.validation, context)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = split.test.evaluate(model)
    eval_seconds = time.perf_counter() - t0
    users = split.test.per_user(model)
    # Original ids beside the indices, so per-user results can be joined back to the user's data.
    users.insert(users.columns.get_loc("user") + 1, "user_id",
                 split.train.data.user_ids[users["user"].to_numpy()])
    users.insert(0, "seed", seed)
    users.insert(0, "model", label)
    metrics = dict(metrics)
    metrics["fit_seconds"] = fit_seconds
    metrics["eval_seconds"] = eval_seconds
    selected = [s for s in context.stages if s.metric and not s.metric.startswith("holdout")]
    if selected:  # the stage chosen on validation users
        metrics["chosen_epoch"] = float(selected[-1].best_epoch)
        metrics[f"validation_{selected[-1].metric}"] = float(selected[-1].best_value)
    for key, value in getattr(model, "selected_", {}).items():  # choices made without epochs
        metrics[key if key.startswith("validation_") else f"selected_{key}"] = float(value)
    return ({"model": label, "seed": seed, "metrics": metrics,
             "stages": [asdict(s) for s in context.stages],
             "history": [{**h, "model": label, "seed": seed} for h in context.history]},
            users)


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {metric: {mean, std, per_seed}}}`` (std is the sample std over seeds)."""
    frame = pd.DataFrame([{"model": r["model"], "seed": r["seed"], **r["metrics"]}
                          for r in records])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for label, group in frame.groupby("model", sort=False):
        group = group.sort_values("seed")
        results[str(label)] = {
            metric: {"mean": float(group[metric].mean()),
                     "std": float(group[metric].std(ddof=1)) if len(group) > 1 else 0.0,
                     "per_seed": [None if pd.isna(v) else float(v) for v in group[metric]]}
            for metric in group.columns if metric not in ("model", "seed")
            and group[metric].notna().any()}
    return results


def main_metrics(users: pd.DataFrame) -> list[str]:
    return [c for c in users.columns
            if c not in ("model", "seed", "domain", "user", "user_id", "n")]


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
