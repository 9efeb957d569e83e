"""Hyper-parameter search on validation users (Optuna), never on test users.

A config's ``tune:`` section gives, per model label, the search space of that model's
hyper-parameters (dotted keys reach nested ones, e.g. ``base_config.lr``)::

    tune:
      BPR:
        lr: {low: 1.0e-3, high: 0.1, log: true}   # a float range (log-uniform here)
        dim: {low: 16, high: 128, step: 16}        # integer bounds: an integer range
        margin: [0.1, 0.5, 1.0]                    # a list: one of these values

``cdrec tune CONFIG --model BPR --trials 30`` fits the model once per trial and seed on the
scenario's training view, scores it on the validation users with the scenario's main metric
(``split.validation``; the test users are never scored), and lets Optuna's TPE sampler (seeded)
pick the next point; a space made of value lists only is walked as a grid, each point once. The study lives in ``<run dir>/tune/<label>/study.db`` so an interrupted
search resumes; ``trials.csv``, ``best.yaml`` (the model's full parameters with the best point)
and ``history.png`` are written beside it.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd
import yaml
from pydantic import ValidationError

from cdrec.config import RunConfig, fingerprint, load_data, set_dotted
from cdrec.filenames import safe_name
from cdrec.models import build_model
from cdrec.models.bases.cache import BaseCache
from cdrec.runtime import keep_freed_memory, set_threads
from cdrec.search_space import Range, SearchSpace
from cdrec.split import Evaluator
from cdrec.train import FitContext, resolve_device, seed_everything


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """One point of ``space`` drawn by an Optuna trial, ``{dotted key: value}``."""
    point: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            point[key] = trial.suggest_categorical(key, spec)
        elif spec.is_int():
            point[key] = trial.suggest_int(key, int(spec.low), int(spec.high),
                                           step=int(spec.step or 1), log=spec.log)
        else:
            point[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step,
                                             log=spec.log)
    return point


def with_point(params: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the dotted keys of ``point`` set (a deep copy)."""

    params = copy.deepcopy(params)
    for key, value in point.items():
        set_dotted(params, key, value)
    return params


def check_space(label: str, name: str, params: dict[str, Any], space: SearchSpace) -> None:
    """Raise ``ValueError`` unless every bound (or listed value) of ``space`` gives a valid
    ``name`` model together with the fixed ``params``."""
    for key, spec in space.items():
        for value in spec if isinstance(spec, list) else [spec.low, spec.high]:
            value = int(value) if isinstance(spec, Range) and spec.is_int() else value
            try:
                build_model(name, **with_point(params, {key: value}))
            except (ValidationError, TypeError, ValueError) as err:
                raise ValueError(f"tune {label}.{key}={value!r} is not a valid {name} "
                                 f"parameter:\n{err}") from None


def is_grid(space: SearchSpace) -> TypeGuard[dict[str, list[Any]]]:
    """A space made of value lists only."""
    return all(isinstance(spec, list) for spec in space.values())


def sampler(space: SearchSpace, seed: int):
    """Optuna's seeded TPE sampler; a space of value lists only is a grid, walked exhaustively
    (each point once, whatever ``trials`` says beyond the grid's size)."""
    import optuna

    if is_grid(space):
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.items()}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def tune(config: RunConfig, label: str, *, trials: int, seeds: list[int] | None = None,
         sampler_seed: int = 0) -> dict[str, Any]:
    """Search ``config.tune[label]`` on validation users; return the best point and files.

    The objective is the validation main metric averaged over ``seeds`` (default: the config's
    first seed); its direction is the metric's. Completed trials already in the study count
    towards ``trials``.
    """
    import optuna

    if label not in config.models:
        raise ValueError(f"model {label!r} is not in the config; models: "
                         f"{', '.join(config.models)}")
    if label not in config.tune:
        raise ValueError(f"the config has no tune: section for {label!r} "
                         f"(tune: has {', '.join(config.tune) or 'nothing'})")
    space = config.tune[label]
    name, params = config.model_params(label)
    check_space(label, name, params, space)  # before any time is spent fitting

    seeds = seeds or config.seeds[:1]
    device = resolve_device(config.device)
    set_threads(config.threads, config.interop_threads)
    keep_freed_memory()
    data = load_data(config.data)
    scenario = config.scenario.build()
    splits = {seed: scenario.split(data, seed) for seed in seeds}
    # Trials that leave the base settings alone reuse the bases pretrained by the first.
    caches = {seed: BaseCache() for seed in seeds}
    validations: dict[int, Evaluator] = {}
    for seed, split in splits.items():
        if split.validation is None:
            raise ValueError(f"scenario {config.scenario.kind!r} has no validation users to "
                             "tune on")
        validations[seed] = split.validation
    validation = validations[seeds[0]]
    metric, maximize = validation.main_metric, validation.higher_is_better

    out = Path(config.output_dir) / config.name / "tune" / safe_name(label)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=label, storage=f"sqlite:///{out / 'study.db'}", load_if_exists=True,
        direction="maximize" if maximize else "minimize",
        sampler=sampler(space, sampler_seed))

    def objective(trial) -> float:
        point = suggest(trial, space)
        values = []
        t0 = time.perf_counter()
        for seed in seeds:
            split = splits[seed]
            seed_everything(seed)
            model = build_model(name, **with_point(params, point))
            model.fit(split.train, split.validation,
                      FitContext(device=device, seed=seed, progress=False,
                                 base_cache=caches[seed]))
            value = float(validations[seed].evaluate(model)[metric])
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"validation {metric} is {value}")
            values.append(value)
            trial.set_user_attr(f"seed{seed}", value)
        trial.set_user_attr("fit_seconds", time.perf_counter() - t0)
        return sum(values) / len(values)

    # A stored study only resumes the same search: same data, scenario, fixed settings, space
    # and seeds; anything else would mix two objectives in one study.
    stamp = fingerprint(config, {"model": name, **params, "space": {
        k: v if isinstance(v, list) else v.model_dump() for k, v in space.items()}}, seeds)
    previous = study.user_attrs.get("fingerprint")
    if previous is None:
        study.set_user_attr("fingerprint", stamp)
        study.set_user_attr("seeds", seeds)
    elif previous != stamp:
        raise ValueError(f"{out / 'study.db'} holds a search with other data, scenario, settings,"
                         f" search space or seeds (seeds {study.user_attrs.get('seeds')}); "
                         f"delete {out} or set another output_dir")
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if is_grid(space):
        trials = min(trials, math.prod(len(spec) for spec in space.values()))
    remaining = max(trials - done, 0)
    study.optimize(objective, n_trials=remaining, show_progress_bar=config.progress)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"no trial of {label} completed; see {out / 'study.db'}")

    frame = study.trials_dataframe()
    frame.to_csv(out / "trials.csv", index=False)
    best = study.best_trial
    best_params = with_point(params, best.params)
    (out / "best.yaml").write_text(yaml.safe_dump({
        "model": label, "metric": f"validation {metric}", "value": best.value,
        "seeds": seeds, "trials": len(complete),
        "params": {"model": name, **best_params}}, sort_keys=False))
    _plot_history(frame, metric, maximize, out / "history.png", label)
    return {"label": label, "metric": metric, "value": best.value, "point": best.params,
            "params": best_params, "trials": len(complete), "dir": str(out)}


def _plot_history(frame: pd.DataFrame, metric: str, maximize: bool, path: Path,
                  title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame["state"] == "COMPLETE"].sort_values("number")
    best = done["value"].cummax() if maximize else done["value"].cummin()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(done["number"], done["value"], "o", alpha=0.6, label="trial")
    ax.plot(done["number"], best, "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{title}: search on validation users")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def override_line(label: str, point: dict[str, Any]) -> str:
    """The ``cdrec run`` overrides that apply ``point`` to model ``label``."""
    return " ".join(f"models.{label}.{k}={v!r}" if isinstance(v, str)
                    else f"models.{label}.{k}={v}" for k, v in point.items())
