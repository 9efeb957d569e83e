"""Dual-target k-fold rating prediction: folds, no leaks, rating and top-k metrics, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ScoreFn

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.schema import DataError
from cdrec.evaluation import MultiDomainEvaluator, RatingTopKEvaluator
from cdrec.metrics import precision_recall_at_k
from cdrec.scenarios import scenario_class
from cdrec.scenarios.kfold_rating import KFoldRating

ROOT = Path(__file__).resolve().parents[1]




def pair_set(inter: Interactions, n_items: int) -> set[int]:
    return set((inter.user * n_items + inter.item).tolist())


def sorted_keys(inter: Interactions, n_items: int) -> list[int]:
    return sorted((inter.user * n_items + inter.item).tolist())


def test_registered_under_its_name():
    assert scenario_class("kfold_rating") is KFoldRating


def test_seeds_0_to_k_minus_1_test_folds_that_partition_the_rows(douban_sample):
    scenario = KFoldRating(k=5)
    folds = scenario.folds(douban_sample, 0)
    for seed in range(1, 5):  # one partition for the k seeds of a cross-validation
        for name, f in scenario.folds(douban_sample, seed).items():
            assert torch.equal(f, folds[name])
    for name in ("book", "music"):
        sizes = torch.bincount(folds[name], minlength=5)
        assert int(sizes.max() - sizes.min()) <= 1
    tested = {"book": [], "music": []}
    for seed in range(5):
        split = scenario.split(douban_sample, seed)
        assert split.info["fold"] == seed
        for name in ("book", "music"):
            n = douban_sample[name].n_items
            held = split.test.for_domain(name).interactions
            full = douban_sample[name].interactions
            assert sorted_keys(held, n) == sorted_keys(full.select(folds[name] == seed), n)
            tested[name] += sorted_keys(held, n)
    for name in ("book", "music"):
        full = douban_sample[name].interactions
        assert sorted(tested[name]) == sorted_keys(full, douban_sample[name].n_items)
    # The next k seeds are a second cross-validation on a fresh shuffle.
    assert not torch.equal(scenario.folds(douban_sample, 5)["book"], folds["book"])


def test_held_out_rows_are_absent_from_the_train_view(douban_sample):
    split = KFoldRating(k=5, validation_fraction=0.1).split(douban_sample, 3)
    assert split.train.scenario == "kfold_rating" and not split.train.implicit
    assert isinstance(split.validation, MultiDomainEvaluator)
    for name in ("book", "music"):
        n = douban_sample[name].n_items
        train = split.train.data[name].interactions
        test = split.test.for_domain(name).interactions
        val = split.validation.for_domain(name).interactions
        train_keys, test_keys, val_keys = pair_set(train, n), pair_set(test, n), pair_set(val, n)
        assert not train_keys & test_keys and not train_keys & val_keys
        assert not test_keys & val_keys
        full = douban_sample[name].interactions
        assert len(train) + len(test) + len(val) == len(full)
        assert train_keys | test_keys | val_keys == pair_set(full, n)
        assert len(val) == round(0.1 * (len(full) - len(test)))
        assert split.train.data[name].given_test is None


def test_duplicate_pairs_share_a_fold():
    user = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    item = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 3])
    inter = Interactions(user, item, torch.tensor([4.0, 5, 3, 2, 1, 1, 5, 4, 3, 2]))
    data = CrossDomainData(np.arange(3), {"a": Domain("a", np.arange(4), inter, (1.0, 5.0))})
    for seed in range(6):
        split = KFoldRating(k=2, validation_fraction=0.0).split(data, seed)
        assert split.validation is None
        assert not pair_set(split.train.data["a"].interactions, 4) & pair_set(
            split.test.interactions, 4)


def test_fold_parameter_and_single_domain(douban_sample):
    scenario = KFoldRating(domains=["music"], k=4, fold=2)
    split = scenario.split(douban_sample, 7)
    assert split.info["fold"] == 2
    assert isinstance(split.test, RatingTopKEvaluator) and split.test.domain == "music"
    assert split.validation.domain == "music"
    folds = scenario.folds(douban_sample, 7)["music"]
    n = douban_sample["music"].n_items
    full = douban_sample["music"].interactions
    assert sorted_keys(split.test.interactions, n) == sorted_keys(full.select(folds == 2), n)
    # The domain that is not evaluated is trained on whole.
    assert len(split.train.data["book"].interactions) == len(douban_sample["book"].interactions)


def _hand_case() -> Interactions:
    # user 0: six test items, ratings 5 4 2 1 3 5; user 1: two items rated 3 and 2 (none relevant)
    return Interactions(torch.tensor([0, 0, 0, 0, 0, 0, 1, 1]),
                        torch.tensor([0, 1, 2, 3, 4, 5, 0, 1]),
                        torch.tensor([5.0, 4, 2, 1, 3, 5, 3, 2]))


def test_precision_and_recall_at_5_by_hand():
    ev = RatingTopKEvaluator("a", _hand_case(), k=5, relevance_threshold=4.0)
    pred = {0: torch.tensor([1.0, 5.0, 4.0, 3.0, 2.0, 0.5]), 1: torch.tensor([4.0, 4.5])}

    def predict(domain, users, items):
        return torch.where(users == 0, pred[0][items], pred[1][items.clamp_max(1)])

    metrics = ev.evaluate(ScoreFn(predict))
    # User 0's top 5 by prediction: items 1, 2, 3, 4, 0 -> relevant (>= 4) among them: 1 and 0.
    # Precision = 2/5; recall = 2 / 3 relevant (items 0, 1, 5). User 1: precision 0/5, no recall.
    assert metrics["Precision@5"] == pytest.approx((2 / 5 + 0) / 2)
    assert metrics["Recall@5"] == pytest.approx(2 / 3)
    err = torch.cat([pred[0], pred[1]]) - _hand_case().rating
    assert metrics["MAE"] == pytest.approx(float(err.abs().mean()))
    assert metrics["RMSE"] == pytest.approx(math.sqrt(float(err.square().mean())))
    table = ev.per_user(ScoreFn(predict))
    assert list(table.columns) == ["user", "RMSE", "MAE", "Precision@5", "Recall@5", "n"]
    assert table["Precision@5"].tolist() == pytest.approx([0.4, 0.0])
    assert table["Recall@5"].iloc[0] == pytest.approx(2 / 3) and np.isnan(table["Recall@5"].iloc[1])
    assert table["n"].tolist() == [6, 2]


def test_top_k_agrees_with_the_dense_metric(douban_sample):
    split = KFoldRating(domains=["book"], validation_fraction=0.0).split(douban_sample, 1)
    ev = split.test
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(douban_sample.n_users, douban_sample["book"].n_items, generator=gen)
    model = ScoreFn(lambda d, u, i: noise[u, i] * 5)
    table = ev.per_user(model)
    # Dense [n_users, max items] layout of the same test rows, padded, for metrics.py.
    inter = ev.interactions
    users = torch.tensor(table.user.to_numpy())
    row = torch.searchsorted(users, inter.user)
    order = torch.argsort(row, stable=True)
    counts = torch.bincount(row)
    col = torch.arange(len(inter)) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    scores = torch.zeros(len(users), int(counts.max()))
    relevant = torch.zeros_like(scores, dtype=torch.bool)
    mask = torch.zeros_like(relevant)
    scores[row[order], col] = (noise[inter.user, inter.item] * 5)[order]
    relevant[row[order], col] = (inter.rating >= 4)[order]
    mask[row[order], col] = True
    precision, recall = precision_recall_at_k(scores, relevant, 5, mask)
    np.testing.assert_allclose(table["Precision@5"].to_numpy(), precision.numpy())
    np.testing.assert_allclose(table["Recall@5"].to_numpy(), recall.numpy())


def test_two_domains_report_each_and_their_mean(douban_sample):
    split = KFoldRating().split(douban_sample, 0)
    model = ScoreFn(lambda d, u, i: torch.full(u.shape, 3.5 if d == "book" else 4.0))
    metrics = split.test.evaluate(model)
    for name in ("book", "music"):
        rating = split.test.for_domain(name).interactions.rating
        value = 3.5 if name == "book" else 4.0
        assert metrics[f"{name}/RMSE"] == pytest.approx(
            math.sqrt(float((rating - value).square().mean())))
    for metric in ("RMSE", "MAE", "Precision@5", "Recall@5"):
        assert metrics[metric] == pytest.approx(
            (metrics[f"book/{metric}"] + metrics[f"music/{metric}"]) / 2)
    assert split.test.main_metric == "RMSE" and not split.test.higher_is_better
    assert split.test.domain is None  # judges no single domain
    table = split.test.per_user(model)
    assert table.columns[0] == "domain" and not table.duplicated(["domain", "user"]).any()
    # Ties (a constant prediction) are broken by a fixed random order: same result every time.
    assert split.test.evaluate(model) == metrics


def test_implicit_domains_are_refused():
    inter = Interactions(torch.arange(10), torch.arange(10) % 3, torch.ones(10))
    data = CrossDomainData(np.arange(10), {"clicks": Domain("clicks", np.arange(3), inter)})
    with pytest.raises(DataError, match="'clicks' holds implicit feedback"):
        KFoldRating().split(data, 0)


def test_too_few_ratings_for_k_folds():
    inter = Interactions(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]), torch.ones(3) * 4)
    data = CrossDomainData(np.arange(2), {"a": Domain("a", np.arange(1), inter, (1.0, 5.0))})
    with pytest.raises(DataError, match="2 distinct .* fewer than k=3"):
        KFoldRating(k=3).split(data, 0)


def test_unknown_domain_names_the_available_ones(douban_sample):
    with pytest.raises(KeyError, match="movie.*book"):
        KFoldRating(domains=["movie"]).split(douban_sample, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 1}, "k must be an integer >= 2"),
    ({"k": 0}, "k must be an integer >= 2"),
    ({"fold": 5}, r"fold must be an integer in \[0, k\)"),
    ({"fold": -1}, r"fold must be an integer in \[0, k\)"),
    ({"top_k": 0}, "top_k must be a positive integer"),
    ({"validation_fraction": 1.0}, "validation_fraction must be in"),
    ({"domains": []}, "domains is empty"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KFoldRating(**kwargs)


def test_the_config_runs_end_to_end(tmp_path):
    from cdrec.config import load_config
    from cdrec.runner import run

    cfg = load_config(ROOT / "configs" / "kfold_douban_sample.yaml", [
        "seeds=[0,1]", "progress=false", "models.MF.epochs=2", "models.CMF.epochs=2",
        "models.MF.batch_size=16384", "models.CMF.batch_size=16384", f"output_dir={tmp_path}"])
    out = Path(run(cfg)["dir"])  # kfold_douban_sample+<overrides>
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["ItemMean", "MF", "CMF"]
    for model, metrics in results.items():
        for name in ("RMSE", "MAE", "book/RMSE", "music/MAE"):
            assert 0.3 < metrics[name]["mean"] < 2.0, (model, name)
        for name in ("Precision@5", "Recall@5", "book/Precision@5", "music/Recall@5"):
            assert 0.0 <= metrics[name]["mean"] <= 1.0, (model, name)
        assert len(metrics["RMSE"]["per_seed"]) == 2
    splits = json.loads((out / "splits.json").read_text())
    assert [splits[s]["fold"] for s in ("0", "1")] == [0, 1]
