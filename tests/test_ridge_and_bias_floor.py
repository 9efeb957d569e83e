"""EMCDR's closed-form ridge mapping (penalty chosen on validation users) and BiasFloor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.linear_model import Ridge

from cdrec.models import build_model
from cdrec.models.coldstart.transfer import ridge_mapping
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext

QUICK = {"epochs": 30, "batch_size": 2048, "lr": 0.02}


@pytest.fixture(scope="module")
def split(transfer_data):
    return ColdStartUsers("src", "tgt").split(transfer_data, 0)


def test_ridge_mapping_is_scikit_learns_ridge():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 5, generator=gen), torch.randn(200, 3, generator=gen)
    alpha = 0.3
    ours = ridge_mapping(x, y, alpha)
    # sklearn penalises the summed squared error: its alpha is n times the mean-error one.
    ref = Ridge(alpha=alpha * len(x), fit_intercept=True).fit(x.numpy(), y.numpy())
    assert torch.allclose(ours.weight, torch.tensor(ref.coef_, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(ours.bias, torch.tensor(ref.intercept_, dtype=torch.float32),
                          atol=1e-5)


def test_emcdr_ridge_penalty_is_chosen_on_validation_users_only(split, monkeypatch):
    scored, values = [], []
    original = type(split.validation).evaluate

    def spy(self, model):
        scored.append("validation" if self is split.validation else "other")
        out = original(self, model)
        values.append(out["RMSE"])
        return out

    monkeypatch.setattr(type(split.validation), "evaluate", spy)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    model = build_model("EMCDR", mapping="ridge", ridge_grid=grid, base_config=QUICK).fit(
        split.train, split.validation, FitContext(seed=0, progress=False))
    assert scored == ["validation"] * len(grid)  # one score per grid point, none on test users
    assert model.selected_["ridge"] == grid[values.index(min(values))]  # the lowest RMSE
    assert model.selected_["validation_RMSE"] == pytest.approx(
        original(split.validation, model)["RMSE"])


def test_emcdr_ridge_transfers_and_needs_no_epochs(split):
    tgt = build_model("TGT", **QUICK).fit(split.train, split.validation,
                                          FitContext(seed=0, progress=False))
    context = FitContext(seed=0, progress=False)
    ridge = build_model("EMCDR", mapping="ridge", base_config=QUICK).fit(
        split.train, split.validation, context)
    assert [s.stage for s in context.stages] == ["base_src", "base_tgt"]  # no mapping epochs
    assert split.test.evaluate(ridge)["RMSE"] < 0.9 * split.test.evaluate(tgt)["RMSE"]


def test_bias_floor_predicts_the_target_mfs_mu_plus_item_bias(split):
    floor = build_model("BiasFloor", **QUICK).fit(split.train, split.validation,
                                                  FitContext(seed=0, progress=False))
    assert floor.is_floor
    mf = floor.models["tgt"]
    users, items = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 7, 7])
    expected = mf.global_mean + mf.item_bias[items]
    assert torch.allclose(floor.predict("tgt", users, items), expected)
    assert floor.predict("tgt", users, items)[0] == floor.predict("tgt", users, items)[1]
    with pytest.raises(ValueError, match="use_bias"):
        build_model("BiasFloor", use_bias=False).fit(split.train, split.validation,
                                                     FitContext(progress=False))


def quickstart_run(tmp_path, models: str, seeds: str) -> dict:
    """``cdrec run`` of the quickstart config (shipped sample) with other models and seeds."""
    from cdrec.config import load_config
    from cdrec.runner import run

    root = Path(__file__).resolve().parents[1]
    return run(load_config(root / "configs" / "quickstart.yaml", [
        f"seeds={seeds}", "progress=false", f"output_dir={tmp_path}", f"models={models}"]))


def test_the_report_marks_against_every_declared_floor(tmp_path):
    out = quickstart_run(tmp_path, "{BiasFloor: {epochs: 3}, TGT: {epochs: 3}}", "[0]")
    assert out["significance"]["best_floor"] == "BiasFloor"  # declared by its class
    assert set(out["significance"]["tests"]["TGT"]) == {"BiasFloor"}


def test_the_best_floor_is_chosen_on_validation_users(tmp_path):
    out = quickstart_run(tmp_path, "{ItemMean: {}, GlobalMean: {}, BiasFloor: {epochs: 3}, "
                                   "TGT: {epochs: 3}}", "[0, 1]")
    signif, results = out["significance"], out["results"]
    assert signif["best_floor_chosen_on"] == "validation"
    floors = ["ItemMean", "GlobalMean", "BiasFloor"]
    by_validation = min(floors, key=lambda f: results[f]["validation_RMSE"]["mean"])
    assert signif["best_floor"] == by_validation
    assert len(results["GlobalMean"]["validation_RMSE"]["per_seed"]) == 2  # floors scored too
