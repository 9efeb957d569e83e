"""Models: exact floors, the cold-start prior of TGT, and transfer beating its baselines."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from cdrec.models import available_models, build_model
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.stats import align_per_user, paired_tests
from cdrec.train import FitContext

QUICK = {"epochs": 40, "batch_size": 2048, "lr": 0.01}


def fit(name, split, seed=0, **params):
    return build_model(name, **params).fit(split.train, split.validation,
                                           FitContext(seed=seed, progress=False))


@pytest.fixture(scope="module")
def synthetic_split(transfer_data):
    return ColdStartUsers("src", "tgt", test_fraction=0.2, validation_fraction=0.1).split(
        transfer_data, 0)


def test_item_mean_matches_pandas(douban_sample):
    split = ColdStartUsers("book", "music").split(douban_sample, 0)
    model = fit("ItemMean", split, shrinkage=3.0, shrinkage_grid=None)
    music = split.train.data["music"].interactions
    frame = pd.DataFrame({"item": music.item.numpy(), "r": music.rating.numpy()})
    mu = frame.r.mean()
    g = frame.groupby("item").r.agg(["sum", "count"])
    expected = (g["sum"] + 3.0 * mu) / (g["count"] + 3.0)
    items = torch.tensor(g.index.to_numpy())
    got = model.predict("music", torch.zeros_like(items), items)
    assert torch.allclose(got.double(), torch.tensor(expected.to_numpy()), atol=1e-5)
    unseen = torch.tensor(sorted(set(range(douban_sample["music"].n_items)) - set(g.index)))
    if unseen.numel():
        assert torch.allclose(model.predict("music", torch.zeros_like(unseen), unseen),
                              torch.tensor(mu, dtype=torch.float32), atol=1e-5)


def test_global_mean_and_popularity(douban_sample):
    split = ColdStartUsers("book", "music").split(douban_sample, 0)
    music = split.train.data["music"].interactions
    items = torch.arange(5)
    gm = fit("GlobalMean", split).predict("music", items, items)
    assert torch.allclose(gm, music.rating.mean().expand(5))
    pop = fit("Popularity", split).predict("music", items, items)
    assert torch.equal(pop, torch.bincount(music.item, minlength=5)[:5].float())


def test_tgt_scores_cold_users_with_the_item_side_only(synthetic_split):
    model = fit("TGT", synthetic_split, epochs=5)
    cold = synthetic_split.test.users[:7]
    items = torch.arange(7)
    mf = model.models["tgt"]
    expected = mf.global_mean + mf.item_bias[items]
    assert torch.allclose(model.predict("tgt", cold, items), expected)
    assert float(mf.user_factors.weight.detach()[cold].abs().sum()) == 0.0


@pytest.mark.parametrize("name", ["EMCDR", "CMF"])
def test_transfer_beats_target_only_and_floor_on_shared_taste(synthetic_split, name):
    """Users carry their taste across domains here, so transfer must win, and significantly."""
    params = {"base_config": QUICK} if name == "EMCDR" else QUICK
    transfer = fit(name, synthetic_split, **params)
    tgt = fit("TGT", synthetic_split, **QUICK)
    floor = fit("ItemMean", synthetic_split)
    t = synthetic_split.test.evaluate(transfer)
    for other in (tgt, floor):
        o = synthetic_split.test.evaluate(other)
        assert t["RMSE"] < 0.8 * o["RMSE"], (name, t, o)
        a, b = align_per_user(synthetic_split.test.per_user(transfer).assign(seed=0),
                              synthetic_split.test.per_user(other).assign(seed=0), "RMSE")
        assert paired_tests(a, b, higher_is_better=False)["significant"]


def test_emcdr_paper_form_runs_and_records_stages(synthetic_split):
    ctx = FitContext(progress=False)
    model = build_model("EMCDR", base_config={**QUICK, "use_bias": False},
                        mapping="linear", overlap_only=True).fit(
        synthetic_split.train, synthetic_split.validation, ctx)
    assert [s.stage for s in ctx.stages] == ["base_src", "base_tgt", "mapping"]
    assert ctx.stages[-1].metric == "RMSE"
    assert 1 <= ctx.stages[-1].best_epoch <= ctx.stages[-1].epochs_run
    assert model.transfer_.in_features == 32  # plain factors: the paper's form
    assert torch.isfinite(synthetic_split.test.evaluate(model)["RMSE"] * torch.ones(1)).all()


def test_registry_and_config_errors(synthetic_split):
    assert {"CMF", "EMCDR", "GlobalMean", "ItemMean", "MF", "Popularity", "TGT"} <= set(
        available_models())
    with pytest.raises(KeyError, match="unknown model 'EMCRD'"):
        build_model("EMCRD")
    with pytest.raises(ValidationError, match="dimm"):
        build_model("TGT", dimm=8)
    with pytest.raises(ValidationError):
        build_model("TGT", dim=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        build_model("ItemMean").predict("tgt", torch.zeros(1, dtype=torch.long),
                                        torch.zeros(1, dtype=torch.long))


def test_scenario_support_is_checked(synthetic_split):
    from dataclasses import replace

    train = replace(synthetic_split.train, scenario="leave_one_out")
    with pytest.raises(ValueError, match="EMCDR does not support scenario 'leave_one_out'"):
        build_model("EMCDR").fit(train)


def test_item_mean_picks_its_shrinkage_on_validation_users_only(douban_sample):
    split = ColdStartUsers("book", "music").split(douban_sample, 0)
    grid = [0.0, 2.0, 50.0]
    model = fit("ItemMean", split, shrinkage_grid=grid)
    by_k = {k: split.validation.evaluate(fit("ItemMean", split, shrinkage=k,
                                             shrinkage_grid=None))["RMSE"] for k in grid}
    assert model.shrinkage_ == min(by_k, key=by_k.get)
    assert model.selected_["validation_RMSE"] == pytest.approx(min(by_k.values()))


def test_mf_early_stops_each_domain_on_that_domains_validation_users():
    from cdrec.data.catalog import sample_path
    from cdrec.data.readers import read_amazon_implicit_pair
    from cdrec.scenarios.leave_one_out import LeaveOneOut

    data = read_amazon_implicit_pair(sample_path("amazon_implicit"), "phone", "electronic")
    split = LeaveOneOut().split(data, 0)
    ctx = FitContext(progress=False)
    build_model("MF", epochs=2, dim=8).fit(split.train, split.validation, ctx)
    assert [(s.stage, s.metric) for s in ctx.stages] == [
        ("base_phone", "NDCG@10"), ("base_electronic", "NDCG@10")]


def test_single_domain_baselines_merge_source_and_target_in_cold_start(synthetic_split):
    """Merged (TMCDR's single-domain baselines): a cold user's factors come from their source
    items, so MF beats the target-only TGT; TGT keeps them at the prior."""
    from cdrec.models.bases.single_domain import merged_target_view

    view = merged_target_view(synthetic_split.train)
    src, tgt = synthetic_split.train.data["src"], synthetic_split.train.data["tgt"]
    merged = view.data["tgt"]
    assert list(view.data.domains) == ["tgt"]
    assert merged.n_items == src.n_items + tgt.n_items
    assert len(merged.interactions) == len(src.interactions) + len(tgt.interactions)
    assert torch.equal(merged.interactions.item[:len(tgt.interactions)], tgt.interactions.item)
    mf = fit("MF", synthetic_split, **QUICK)
    tgt_model = fit("TGT", synthetic_split, **QUICK)
    assert (synthetic_split.test.evaluate(mf)["RMSE"]
            < 0.9 * synthetic_split.test.evaluate(tgt_model)["RMSE"])
    cold = synthetic_split.test.users
    assert float(tgt_model.models["tgt"].user_factors.weight.detach()[cold].abs().sum()) == 0.0
