"""`cdrec tune`: search on validation users only, resumable studies, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cdrec.cli import app
from cdrec.config import load_config, load_data
from cdrec.models import build_model
from cdrec.train import FitContext, seed_everything
from cdrec.tune import tune

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quickstart.yaml"
SPACE = ["tune={TGT: {lr: {low: 0.005, high: 0.05, log: true}, dim: [8, 16]}}",
         "models.TGT.epochs=4", "progress=false"]


def test_tune_scores_validation_users_never_test_users(tmp_path, monkeypatch):
    seen: list[str] = []
    cfg = load_config(QUICK, [*SPACE, f"output_dir={tmp_path}"])
    scenario = cfg.scenario.build()
    split = scenario.split(load_data(cfg.data), 0)
    test_type, validation_type = type(split.test), type(split.validation)
    assert test_type is validation_type  # so the spy must tell them apart by their users
    test_users = set(split.test.users.tolist())
    assert test_users.isdisjoint(split.validation.users.tolist())
    real = validation_type.evaluate

    def spy(self, model):
        seen.append("test" if set(self.users.tolist()) == test_users else "validation")
        return real(self, model)

    monkeypatch.setattr(validation_type, "evaluate", spy)
    best = tune(cfg, "TGT", trials=3)
    assert seen and set(seen) == {"validation"}

    out = Path(best["dir"])
    trials = pd.read_csv(out / "trials.csv")
    assert (trials.state == "COMPLETE").sum() == 3
    assert best["value"] == pytest.approx(trials.value.min())  # RMSE: lower is better
    assert set(best["point"]) == {"lr", "dim"} and best["point"]["dim"] in (8, 16)
    saved = yaml.safe_load((out / "best.yaml").read_text())
    assert saved["metric"] == "validation RMSE"
    assert saved["params"]["lr"] == pytest.approx(best["point"]["lr"])
    assert saved["params"]["epochs"] == 4  # the config's other settings are kept
    assert (out / "history.png").stat().st_size > 0

    # The best value is reproducible: refit with the best point on the same split and seed.
    seed_everything(0)
    model = build_model("TGT", **{k: v for k, v in saved["params"].items() if k != "model"})
    model.fit(split.train, split.validation, FitContext(seed=0, progress=False))
    assert real(split.validation, model)["RMSE"] == pytest.approx(best["value"], rel=1e-5)


def test_tune_resumes_the_study(tmp_path):
    cfg = load_config(QUICK, [*SPACE, f"output_dir={tmp_path}"])
    tune(cfg, "TGT", trials=2)
    again = tune(cfg, "TGT", trials=3)  # one more trial, not three
    assert again["trials"] == 3
    trials = pd.read_csv(Path(again["dir"]) / "trials.csv")
    assert len(trials) == 3
    # Another objective (other seeds, or another space) must not resume this study.
    with pytest.raises(ValueError, match="holds a search with other"):
        tune(cfg, "TGT", trials=4, seeds=[1])
    wider = load_config(QUICK, [*SPACE, "tune.TGT.dim=[8, 16, 32]", f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="holds a search with other"):
        tune(wider, "TGT", trials=4)


@pytest.mark.parametrize("override, message", [
    ("tune={TGT: {lr: {low: 0.1, high: 0.01}}}", "must be below high"),
    ("tune={TGT: {lr: {low: 0.0, high: 0.1, log: true}}}", "log range needs low > 0"),
    ("tune={Nope: {lr: [0.1]}}", "not among the models"),
])
def test_bad_search_spaces_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(QUICK, [override])


def test_invalid_parameter_values_fail_before_fitting(tmp_path):
    cfg = load_config(QUICK, ["tune={TGT: {lr: [-1.0, 0.01]}}", f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"TGT.lr=-1.0 is not a valid"):
        tune(cfg, "TGT", trials=1)
    with pytest.raises(ValueError, match="no tune: section for 'CMF'"):
        tune(cfg, "CMF", trials=1)


def test_cli_tune_prints_the_override(tmp_path):
    result = CliRunner().invoke(app, ["tune", str(QUICK), *SPACE, f"output_dir={tmp_path}",
                                      "--trials", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "best validation RMSE" in result.output
    assert "models.TGT.lr=" in result.output and "models.TGT.dim=" in result.output


def test_a_space_of_lists_is_a_grid_walked_once(tmp_path):
    cfg = load_config(QUICK, ["tune={TGT: {dim: [4, 8], reg: [0.05, 0.2]}}", "models.TGT.epochs=2",
                              "progress=false", f"output_dir={tmp_path}"])
    best = tune(cfg, "TGT", trials=50)  # capped at the grid's 4 points
    trials = pd.read_csv(Path(best["dir"]) / "trials.csv")
    assert best["trials"] == 4
    assert sorted(zip(trials.params_dim, trials.params_reg)) == [
        (4, 0.05), (4, 0.2), (8, 0.05), (8, 0.2)]


def test_cli_tune_without_a_search_space_says_so(tmp_path):
    result = CliRunner().invoke(app, ["tune", str(QUICK), f"output_dir={tmp_path}"])
    assert result.exit_code == 2
    assert "has no tune: section" in result.output
