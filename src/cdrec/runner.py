"""Config -> dataset -> scenario -> models x seeds -> results on disk.

A run directory ``runs/<name>/`` holds: ``config.yaml`` (the resolved config, every model's full
hyper-parameters included), ``results.json`` (``{model: {metric: {mean, std, per_seed}}}``),
``results.md`` (the table, with significance marks; user groups such as leave-one-out's
low-activity users get their own tables, see :func:`cdrec.report.group_tables`),
``significance.json``, ``per_user.parquet`` (each test user's metrics per model and seed),
``history.csv`` and ``curves.png`` (training curves), ``models/<label>_seed<seed>.pt`` (each
fitted model, for ``cdrec recommend``; off with ``save_models: false``), and ``seeds/`` +
``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from cdrec import distributed
from cdrec.config import RunConfig, fingerprint, load_data
from cdrec.filenames import safe_name
from cdrec.models import available_models, build_model
from cdrec.models.bases.cache import BaseCache
from cdrec.runtime import keep_freed_memory, set_threads
from cdrec.split import Split
from cdrec.tracking import Trackers, TrackingConfig
from cdrec.train import FitContext, resolve_device, seed_everything


def run(config: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train and evaluate every model for every seed; write the run directory; return results."""
    from cdrec.report import metric_groups, plot_curves, significance_table, write_markdown

    device = resolve_device(config.device)
    set_threads(config.threads, config.interop_threads)
    keep_freed_memory()
    if distributed.init_from_env(device) and not distributed.is_main():
        # Process r > 0 of a torchrun job keeps its own copy (checkpoints for --resume, no
        # shared file system needed); process 0 writes the run directory and prints.
        config = config.model_copy(update={
            "output_dir": str(Path(config.output_dir) / ".ranks" / f"rank{distributed.rank()}"),
            "progress": False})
    out = Path(config.output_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    labels = list(config.models)
    resolved = config.model_dump()
    resolved["models"] = {}
    for label in labels:
        name, params = config.model_params(label)
        resolved["models"][label] = {"model": name, **build_model(name, **params).config.model_dump()}
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    trackers = Trackers(config.tracking if distributed.is_main() else TrackingConfig(),
                        Path(config.output_dir), out, out.name, resolved)
    data = load_data(config.data)
    scenario = config.scenario.build()
    seed_dir = out / "seeds"
    seed_dir.mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    per_user: list[pd.DataFrame] = []
    history: list[dict[str, Any]] = []
    split_info: dict[int, Any] = {}
    selection_metric: str | None = None
    for seed in config.seeds:
        split: Split = scenario.split(data, seed)
        split_info[seed] = split.info
        if split.validation is not None:
            selection_metric = split.validation.main_metric
        cache = BaseCache()  # models over the same base pretrain it once per split
        for label in labels:
            record_path = seed_dir / f"{safe_name(label)}_seed{seed}.json"
            users_path = seed_dir / f"{safe_name(label)}_seed{seed}.parquet"
            stamp = fingerprint(config, resolved["models"][label], seed)
            saved = json.loads(record_path.read_text()) if resume and record_path.exists() \
                else None
            reuse = (saved is not None and saved.get("fingerprint") == stamp
                     and users_path.exists()
                     and (not config.save_models or model_path(out, label, seed).exists()))
            distributed.check_same(int(reuse), f"whether {label} seed {seed} is already done")
            if reuse:
                assert saved is not None
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
            trackers.log_fit(label, seed, resolved["models"][label], record,
                             model_path(out, label, seed) if config.save_models else None)
            records.append(record)
            per_user.append(users)
            history.extend(record.get("history", []))

    results = aggregate(records)
    users_df = pd.concat(per_user, ignore_index=True)
    users_df.to_parquet(out / "per_user.parquet", index=False)
    names = {label: config.model_params(label)[0] for label in labels}
    models = available_models()
    floors = [label for label, name in names.items() if models[name].is_floor]
    metrics = main_metrics(users_df)
    # A run with user groups (leave_one_out's low_activity) also tests each domain on its own:
    # results.md shows each domain's group beside its overall metrics.
    signif = significance_table(users_df, results, names, metrics,
                                compare=config.compare, floors=floors,
                                selection_metric=selection_metric,
                                per_domain=bool(metric_groups(metrics)))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "significance.json").write_text(json.dumps(signif, indent=1))
    (out / "splits.json").write_text(json.dumps(split_info, indent=1))
    table = write_markdown(out / "results.md", config.name, results, signif, split_info)
    if history:
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        plot_curves(pd.DataFrame(history), out / "curves.png")
    trackers.finish(results, [out / name for name in ("results.md", "results.json",
                                                      "significance.json", "config.yaml")])
    return {"results": results, "significance": signif, "table": table, "dir": str(out)}


def model_path(run_dir: Path, label: str, seed: int) -> Path:
    """Where a run keeps the fitted model of (``label``, ``seed``)."""
    return run_dir / "models" / f"{safe_name(label)}_seed{seed}.pt"


def _checkpoints(out: Path, label: str, seed: int) -> Path:
    return out / "checkpoints" / safe_name(label) / f"seed{seed}"


def _fit_one(config: RunConfig, label: str, seed: int, split: Split, device: torch.device, out: Path,
             resume: bool, cache: BaseCache | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    name, params = config.model_params(label)
    seed_everything(seed)
    model = build_model(name, **params)
    context = FitContext(device=device, seed=seed, progress=config.progress,
                         checkpoint_dir=_checkpoints(out, label, seed),
                         checkpoint_every=config.checkpoint_every,
                         checkpoint_seconds=config.checkpoint_seconds,
                         resume=resume, label=f"{label} seed {seed}", base_cache=cache)
    t0 = time.perf_counter()
    model.fit(split.train, split.validation, context)
    fit_seconds = time.perf_counter() - t0
    if config.save_models and distributed.is_main():
        model.save(model_path(out, label, seed))
    rounds = getattr(model, "rounds_", None)
    if rounds and distributed.is_main():  # a federated model's per-round costs
        (out / "rounds").mkdir(exist_ok=True)
        pd.DataFrame(rounds).to_csv(out / "rounds" / f"{label}_seed{seed}.csv", index=False)
    t0 = time.perf_counter()
    metrics = split.test.evaluate(model)
    eval_seconds = time.perf_counter() - t0
    users = split.test.per_user(model)
    # Original ids beside the indices, so per-user results can be joined back to the user's data.
    user_col = users.columns.get_loc("user")
    if not isinstance(user_col, int):  # a slice or mask: the column name is not unique
        raise TypeError(f"{label}: the per-user table has more than one 'user' column")
    users.insert(user_col + 1, "user_id", split.train.data.user_ids[users["user"].to_numpy()])
    users.insert(0, "seed", seed)
    users.insert(0, "model", label)
    metrics = dict(metrics)
    metrics["fit_seconds"] = fit_seconds
    metrics["eval_seconds"] = eval_seconds
    selected = [s for s in context.stages if s.metric and not s.metric.startswith("holdout")]
    if selected:  # the stage chosen on validation users
        chosen = selected[-1]
        if chosen.best_value is None:  # every validation value of the stage was NaN or inf
            raise ValueError(f"{label} seed {seed}: stage {chosen.stage} never reached a finite "
                             f"validation {chosen.metric}")
        metrics["chosen_epoch"] = float(chosen.best_epoch)
        metrics[f"validation_{chosen.metric}"] = float(chosen.best_value)
    for key, value in getattr(model, "fit_report_", {}).items():  # e.g. a federated leakage
        metrics[key] = float(value)
    for key, value in getattr(model, "selected_", {}).items():  # choices made without epochs
        metrics[key if key.startswith("validation_") else f"selected_{key}"] = float(value)
    if split.validation is not None:
        # Every model's validation score (floors without epochs too): the report chooses the
        # best floor on it, not on the test users.
        main = split.validation.main_metric
        metrics.setdefault(f"validation_{main}", float(split.validation.evaluate(model)[main]))
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
