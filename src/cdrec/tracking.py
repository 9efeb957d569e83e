"""Experiment tracking through the standard tools: MLflow and TensorBoard (``pip install
"cdrec[track]"``), switched on in a config's ``tracking:`` section.

MLflow: one run per config (its resolved settings as parameters, each model's mean test metrics,
and ``results.md``, ``results.json``, ``significance.json``, ``config.yaml`` as artifacts) with
one nested run per (model, seed): the model's hyper-parameters, every epoch's training loss and
validation metric (``<stage>.<key>`` at step = epoch), the test metrics, and the fitted model
file. The store is local by default: ``sqlite:///<output_dir>/mlflow.db`` with artifacts in
``<output_dir>/mlartifacts`` (MLflow 3 keeps its plain-file store in maintenance mode only, so
cdrec uses its SQLite store, which needs no server). ``mlflow: <uri>`` logs elsewhere.

TensorBoard: ``<run_dir>/tensorboard/<label>_seed<seed>/`` per (model, seed), the same epoch
curves as scalars ``<stage>/<key>`` and the test metrics as ``test/<metric>``
(``tensorboard --logdir runs/<name>/tensorboard``).

Nothing here leaves the machine: MLflow's usage telemetry is switched off before it is imported.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from cdrec.filenames import safe_name


class TrackingConfig(BaseModel):
    """The ``tracking:`` section of a run config."""

    model_config = ConfigDict(extra="forbid")

    # mlflow: true for the local store sqlite:///<output_dir>/mlflow.db, or a tracking URI;
    # tensorboard: write scalars into the run directory; experiment: MLflow's experiment name
    # (default: the run name).
    mlflow: bool | str = False
    tensorboard: bool = False
    experiment: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.mlflow) or self.tensorboard


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_scalars(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, int, float]]:
    """``(stage, key, epoch, value)`` of every numeric per-epoch value of a fit's history
    (training loss, validation metrics), the bookkeeping columns left out."""
    skip = {"epoch", "seed", "seconds"}
    out = []
    for record in history:
        for key, value in record.items():
            number = _numeric(value)
            if key not in skip and number is not None:
                out.append((str(record.get("stage", "")), key, int(record["epoch"]), number))
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``a.b.c -> text`` parameters."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


_MLFLOW_NAME = re.compile(r"[^\w\-. /]")


def mlflow_name(name: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, _ - . space /)."""
    return _MLFLOW_NAME.sub("_", name)


class MlflowTracker:
    """A parent run per config and a nested run per (model, seed) (module docstring)."""

    def __init__(self, config: TrackingConfig, output_dir: Path, run_name: str,
                 resolved: Mapping[str, Any]) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ValueError('tracking.mlflow needs MLflow: pip install -e ".[track]"') from None
        self._metric, self._param = Metric, Param
        output_dir.mkdir(parents=True, exist_ok=True)
        uri = (config.mlflow if isinstance(config.mlflow, str)
               else f"sqlite:///{(output_dir / 'mlflow.db').resolve()}")
        self.uri = uri
        self.client = MlflowClient(uri)
        name = config.experiment or run_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
        else:
            artifacts = (output_dir / "mlartifacts").resolve().as_uri() \
                if not isinstance(config.mlflow, str) else None
            self.experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
        self.parent = self.client.create_run(self.experiment_id, run_name=run_name).info.run_id
        self._params(self.parent, flatten({k: v for k, v in resolved.items() if k != "models"}))

    def _params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [self._param(mlflow_name(k), v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(run_id, params=items[start:start + 100])

    def _metrics(self, run_id: str, values: Sequence[tuple[str, float, int]]) -> None:
        now = int(time.time() * 1000)
        items = [self._metric(mlflow_name(k), v, now, step) for k, v, step in values]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])

    def log_fit(self, label: str, seed: int, params: Mapping[str, Any],
                record: Mapping[str, Any], model_file: Path | None) -> None:
        run = self.client.create_run(self.experiment_id, run_name=f"{label} seed {seed}", tags={
            "mlflow.parentRunId": self.parent, "cdrec.label": label, "cdrec.seed": str(seed)})
        run_id = run.info.run_id
        self._params(run_id, flatten(params))
        curves = [(f"{stage}.{key}", value, epoch)
                  for stage, key, epoch, value in epoch_scalars(record.get("history", []))]
        final = [(key, number, 0) for key, value in record["metrics"].items()
                 if (number := _numeric(value)) is not None]
        self._metrics(run_id, curves + final)
        if model_file is not None and model_file.exists():
            self.client.log_artifact(run_id, str(model_file))
        self.client.set_terminated(run_id)

    def finish(self, results: Mapping[str, Mapping[str, Mapping[str, Any]]],
               files: Sequence[Path]) -> None:
        summary = [(f"{label}.{metric}", number, 0) for label, metrics in results.items()
                   for metric, cell in metrics.items()
                   if (number := _numeric(cell.get("mean"))) is not None]
        self._metrics(self.parent, summary)
        for file in files:
            if file.exists():
                self.client.log_artifact(self.parent, str(file))
        self.client.set_terminated(self.parent)


class TensorBoardTracker:
    """Scalars per (model, seed) under ``<run_dir>/tensorboard/`` (module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError('tracking.tensorboard needs TensorBoard: pip install -e '
                             '".[track]"') from None
        self._writer = SummaryWriter
        self.root = run_dir / "tensorboard"

    def log_fit(self, label: str, seed: int, params: Mapping[str, Any],
                record: Mapping[str, Any], model_file: Path | None) -> None:
        writer = self._writer(str(self.root / f"{safe_name(label)}_seed{seed}"))
        try:
            for stage, key, epoch, value in epoch_scalars(record.get("history", [])):
                writer.add_scalar(f"{stage}/{key}", value, epoch)
            for key, value in record["metrics"].items():
                if (number := _numeric(value)) is not None:
                    writer.add_scalar(f"test/{key}", number, 0)
        finally:
            writer.close()

    def finish(self, results: Mapping[str, Any], files: Sequence[Path]) -> None:
        pass


class Trackers:
    """The trackers a config switches on, called together (none: every call does nothing)."""

    def __init__(self, config: TrackingConfig, output_dir: Path, run_dir: Path, run_name: str,
                 resolved: Mapping[str, Any]) -> None:
        self.active: list[MlflowTracker | TensorBoardTracker] = []
        if config.mlflow:
            self.active.append(MlflowTracker(config, output_dir, run_name, resolved))
        if config.tensorboard:
            self.active.append(TensorBoardTracker(run_dir))

    def log_fit(self, label: str, seed: int, params: Mapping[str, Any],
                record: Mapping[str, Any], model_file: Path | None) -> None:
        for tracker in self.active:
            tracker.log_fit(label, seed, params, record, model_file)

    def finish(self, results: Mapping[str, Mapping[str, Mapping[str, Any]]],
               files: Sequence[Path]) -> None:
        for tracker in self.active:
            tracker.finish(results, files)
