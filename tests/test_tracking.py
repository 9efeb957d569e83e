"""Experiment tracking: the quickstart logged to MLflow (a temporary local store) and
TensorBoard, and read back with their own readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdrec.config import load_config
from cdrec.runner import run

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["seeds=[0]", "progress=false", "models.TGT.epochs=3", "models.CMF.epochs=2",
         "models.EMCDR.base_config.epochs=3", "models.EMCDR.epochs=4"]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [*QUICK, f"output_dir={out}", "tracking.mlflow=true",
                       "tracking.tensorboard=true", "name=tracked"])
    return run(cfg), out


def test_mlflow_holds_the_run_its_curves_metrics_and_files(tracked) -> None:
    import mlflow  # in the dev extras (cdrec[track]): a missing install fails, not skips
    result, out = tracked
    client = mlflow.tracking.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["cdrec.label"]: r for r in runs if r not in parents}
    assert len(parents) == 1 and set(children) == {"ItemMean", "TGT", "CMF", "EMCDR"}
    parent = parents[0]
    assert parent.data.params["scenario.params.target"] == "music"
    results = json.loads((Path(result["dir"]) / "results.json").read_text())
    assert parent.data.metrics["EMCDR.MAE"] == pytest.approx(results["EMCDR"]["MAE"]["mean"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "results.md", "results.json", "config.yaml"}

    emcdr = children["EMCDR"]
    assert emcdr.data.params["mapping"] == "mlp" and emcdr.data.params["base_config.epochs"] == "3"
    assert emcdr.data.metrics["MAE"] == pytest.approx(results["EMCDR"]["MAE"]["per_seed"][0])
    curve = client.get_metric_history(emcdr.info.run_id, "mapping.val_RMSE")
    assert [m.step for m in curve] == [1, 2, 3, 4]  # one value per epoch of the mapping stage
    assert [a.path for a in client.list_artifacts(emcdr.info.run_id)] == ["EMCDR_seed0.pt"]


def test_tensorboard_has_the_epoch_curves_and_test_metrics(tracked) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = tracked
    results = json.loads((Path(result["dir"]) / "results.json").read_text())
    events = EventAccumulator(str(Path(result["dir"]) / "tensorboard" / "TGT_seed0")).Reload()
    assert [e.step for e in events.Scalars("base_music/val_RMSE")] == [1, 2, 3]
    (mae,) = events.Scalars("test/MAE")
    assert mae.value == pytest.approx(results["TGT"]["MAE"]["per_seed"][0], rel=1e-6)


def test_tracking_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="tracking"):
        load_config(ROOT / "configs" / "quickstart.yaml", ["tracking.mlfow=true"])
