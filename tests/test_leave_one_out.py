"""Multi-target leave-one-out: held-out positives, sampled negatives, metrics and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ScoreFn, two_domain_clusters

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.schema import DataError
from cdrec.evaluation import MultiDomainEvaluator, SampledRankingEvaluator
from cdrec.scenarios import scenario_class
from cdrec.scenarios.leave_one_out import (
    LeaveOneOut,
    sample_distinct_negatives,
    training_counts,
)

ROOT = Path(__file__).resolve().parents[1]




def keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> set[int]:
    return set((users * n_items + items).tolist())


@pytest.fixture(scope="module")
def amazon() -> CrossDomainData:
    from cdrec.data.catalog import sample_path
    from cdrec.data.readers import read_amazon_implicit_pair

    return read_amazon_implicit_pair(sample_path("amazon_implicit"), "phone", "electronic")


@pytest.fixture(scope="module")
def split(amazon):
    return LeaveOneOut().split(amazon, seed=0)


def test_registered_under_its_name():
    assert scenario_class("leave_one_out") is LeaveOneOut
    assert LeaveOneOut.name == "leave_one_out"


def test_the_shipped_test_file_gives_the_test_positives(amazon, split):
    assert isinstance(split.test, MultiDomainEvaluator)
    assert split.test.domains == ["phone", "electronic"]
    for name in ("phone", "electronic"):
        ev = split.test.for_domain(name)
        given = amazon[name].given_test
        order = torch.argsort(given.user)
        assert torch.equal(ev.users, given.user[order])
        assert torch.equal(ev.positives, given.item[order])
        assert split.info[f"{name}_test_users"] == len(given)
        assert split.info[f"{name}_test_from"] == "given_test"


def test_nothing_held_out_is_in_the_train_view(amazon, split):
    assert split.train.scenario == "leave_one_out" and split.train.implicit
    for name in ("phone", "electronic"):
        n = amazon[name].n_items
        train = split.train.data[name]
        assert train.given_test is None
        train_keys = keys(train.interactions.user, train.interactions.item, n)
        test, val = split.test.for_domain(name), split.validation.for_domain(name)
        assert not train_keys & keys(test.users, test.positives, n)
        assert not train_keys & keys(val.users, val.positives, n)
        # Validation: one training row per user (every sample user has >= 9 items), taken from
        # the training file; the train view is the rest of the training file, nothing else.
        full = amazon[name].interactions
        assert torch.equal(val.users, torch.unique(full.user))
        assert keys(val.users, val.positives, n) <= keys(full.user, full.item, n)
        assert train_keys | keys(val.users, val.positives, n) == keys(full.user, full.item, n)
        assert len(train.interactions) == len(full) - len(val.users)


def test_negatives_are_distinct_unobserved_and_n_neg_per_user(amazon, split):
    for name in ("phone", "electronic"):
        dom = amazon[name]
        n = dom.n_items
        everything = dom.interactions.concat(dom.given_test)
        observed = torch.tensor(sorted(keys(everything.user, everything.item, n)))
        for ev in (split.test.for_domain(name), split.validation.for_domain(name)):
            assert ev.negatives.shape == (ev.users.numel(), 99)
            neg_keys = ev.users.unsqueeze(1) * n + ev.negatives
            assert not bool(torch.isin(neg_keys, observed).any())
            assert bool(((ev.negatives >= 0) & (ev.negatives < n)).all())
            distinct = torch.sort(ev.negatives, 1).values
            assert bool((distinct[:, 1:] != distinct[:, :-1]).all())


def test_the_split_depends_on_the_seed_only(amazon):
    scenario = LeaveOneOut(domains=["phone"])
    a, b, c = (scenario.split(amazon, s) for s in (4, 4, 5))
    assert torch.equal(a.test.negatives, b.test.negatives)
    assert torch.equal(a.validation.positives, b.validation.positives)
    assert torch.equal(a.test.positives, c.test.positives)  # the given test file, every seed
    assert not torch.equal(a.test.negatives, c.test.negatives)
    assert not torch.equal(a.validation.positives, c.validation.positives)


def test_one_domain_gives_a_plain_evaluator_with_its_domain(amazon):
    split = LeaveOneOut(domains=["electronic"], n_neg=20, ks=[5]).split(amazon, 0)
    assert isinstance(split.test, SampledRankingEvaluator)
    assert split.test.domain == split.validation.domain == "electronic"
    assert split.test.main_metric == "NDCG@5" and split.test.negatives.shape[1] == 20
    # The other domain is trained on as it is (its test file dropped).
    phone = split.train.data["phone"]
    assert len(phone.interactions) == len(amazon["phone"].interactions)
    assert phone.given_test is None


def test_oracle_constant_and_reversed_scores_give_the_exact_values(amazon, split):
    held = {name: (split.test.for_domain(name).users * amazon[name].n_items
                   + split.test.for_domain(name).positives).sort().values
            for name in split.test.domains}

    def is_positive(domain, users, items):
        return torch.isin(users * amazon[domain].n_items + items, held[domain])

    oracle = split.test.evaluate(ScoreFn(lambda d, u, i: is_positive(d, u, i).float()))
    assert oracle["NDCG@10"] == oracle["MRR"] == oracle["HR@10"] == oracle["HR@20"] == 1.0
    assert oracle["phone/NDCG@20"] == oracle["electronic/MRR"] == 1.0

    constant = split.test.evaluate(ScoreFn(lambda d, u, i: torch.zeros(u.shape)))
    harmonic = sum(1 / r for r in range(1, 101))
    disc10 = sum(1 / math.log2(r + 1) for r in range(1, 11))
    for prefix in ("", "phone/", "electronic/"):
        assert constant[f"{prefix}MRR"] == pytest.approx(harmonic / 100)
        assert constant[f"{prefix}HR@10"] == pytest.approx(0.10)
        assert constant[f"{prefix}HR@20"] == pytest.approx(0.20)
        assert constant[f"{prefix}NDCG@10"] == pytest.approx(disc10 / 100)

    last = split.test.evaluate(ScoreFn(lambda d, u, i: -is_positive(d, u, i).float()))
    assert last["MRR"] == pytest.approx(1 / 100)
    assert last["HR@20"] == last["NDCG@20"] == 0.0


def test_ranks_by_hand_and_per_user_rows(amazon, split):
    # Score = -item: the positive's rank is 1 + the number of its negatives with a smaller id.
    model = ScoreFn(lambda d, u, i: -i.double())
    table = split.test.per_user(model)
    assert list(table.columns) == ["domain", "user", "NDCG@10", "MRR", "HR@10", "HR@20",
                                   "NDCG@20"]
    assert not table.duplicated(["domain", "user"]).any()
    for name in ("phone", "electronic"):
        ev = split.test.for_domain(name)
        rank = 1 + (ev.negatives < ev.positives.unsqueeze(1)).sum(1).double()
        rows = table[table.domain == name]
        assert np.array_equal(rows.user.to_numpy(), ev.users.numpy())
        np.testing.assert_allclose(rows.MRR.to_numpy(), (1 / rank).numpy())
        np.testing.assert_allclose(rows["HR@10"].to_numpy(), (rank <= 10).double().numpy())
        ndcg = torch.where(rank <= 10, 1 / torch.log2(rank + 1), torch.zeros_like(rank))
        np.testing.assert_allclose(rows["NDCG@10"].to_numpy(), ndcg.numpy())
    metrics = split.test.evaluate(model)
    per_domain = table.groupby("domain").MRR.mean()
    assert metrics["phone/MRR"] == pytest.approx(per_domain["phone"])
    assert metrics["MRR"] == pytest.approx(per_domain.mean())


def _toy(with_time: bool) -> CrossDomainData:
    # user 0: items 0,1,2 at times 30,10,20; user 1: items 3,4 at times 5,6; user 2: item 5 only;
    # user 3: item 6 twice (one distinct item: never held out).
    user = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    item = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])
    time = torch.tensor([30, 10, 20, 5, 6, 1, 1, 2]) if with_time else None
    inter = Interactions(user, item, torch.ones(8), time)
    return CrossDomainData(np.arange(4), {"a": Domain("a", np.arange(200), inter)})


def test_without_a_test_file_the_last_interaction_by_time_is_held_out():
    split = LeaveOneOut(n_neg=10).split(_toy(with_time=True), 0)
    assert split.info["a_test_from"] == "last_by_time"
    assert split.test.users.tolist() == [0, 1]
    assert split.test.positives.tolist() == [0, 4]
    # Validation: the latest remaining row, for users still holding two distinct items.
    assert split.validation.users.tolist() == [0]
    assert split.validation.positives.tolist() == [2]
    train = split.train.data["a"].interactions
    assert sorted(zip(train.user.tolist(), train.item.tolist(), strict=True)) == [
        (0, 1), (1, 3), (2, 5), (3, 6), (3, 6)]


def test_without_timestamps_a_seeded_random_interaction_is_held_out():
    data = _toy(with_time=False)
    picks = {tuple(LeaveOneOut(n_neg=10, validation=False).split(data, s).test.positives.tolist())
             for s in range(20)}
    assert all(p[0] in (0, 1, 2) and p[1] in (3, 4) for p in picks)
    assert len(picks) > 1
    again = LeaveOneOut(n_neg=10).split(data, 3)
    assert torch.equal(again.test.positives, LeaveOneOut(n_neg=10).split(data, 3).test.positives)
    assert again.info["a_test_from"] == "random"


def test_the_test_file_can_be_ignored(amazon):
    split = LeaveOneOut(domains=["phone"], use_given_test=False).split(amazon, 0)
    dom = amazon["phone"]
    n = dom.n_items
    ev = split.test
    assert split.info["phone_test_from"] == "random"
    assert keys(ev.users, ev.positives, n) <= keys(dom.interactions.user, dom.interactions.item, n)
    assert ev.users.numel() == torch.unique(dom.interactions.user).numel()
    # The test file's items are still interactions: never negatives.
    given = keys(dom.given_test.user, dom.given_test.item, n)
    assert not given & set((ev.users.unsqueeze(1) * n + ev.negatives).flatten().tolist())
    train = split.train.data["phone"].interactions
    assert not keys(train.user, train.item, n) & (given | keys(ev.users, ev.positives, n))


def test_explicit_ratings_are_binarised(douban_sample):
    split = LeaveOneOut(n_neg=20).split(douban_sample, 0)
    assert split.train.implicit
    for name in ("book", "music"):
        dom = split.train.data[name]
        assert dom.implicit and bool((dom.interactions.rating == 1).all())
    assert split.info["book_test_from"] == "random"


def test_distinct_negatives_fill_a_nearly_full_row_exactly():
    observed = torch.tensor(sorted(range(25)) + [30 + 1, 30 + 2])  # user 0: items 0..24
    users = torch.tensor([0, 0, 1])
    gen = torch.Generator().manual_seed(0)
    neg = sample_distinct_negatives(users, 30, 5, observed, gen)
    assert sorted(neg[0].tolist()) == sorted(neg[1].tolist()) == [25, 26, 27, 28, 29]
    assert len(set(neg[2].tolist())) == 5 and not {1, 2} & set(neg[2].tolist())


def test_too_many_negatives_for_a_domain_is_a_clear_error():
    with pytest.raises(ValueError, match="n_neg=199 is too large for domain 'a'"):
        LeaveOneOut(n_neg=199).split(_toy(with_time=True), 0)
    LeaveOneOut(n_neg=197).split(_toy(with_time=True), 0)  # user 0 has 197 unobserved items


def test_a_test_file_with_several_rows_per_user_is_refused():
    inter = Interactions(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), torch.ones(3))
    given = Interactions(torch.tensor([0, 1, 1]), torch.tensor([3, 4, 5]), torch.ones(3))
    data = CrossDomainData(np.array(["u0", "u1"]),
                           {"a": Domain("a", np.arange(50), inter, given_test=given)})
    with pytest.raises(DataError, match="2 rows for user 'u1'.*use_given_test: false"):
        LeaveOneOut(n_neg=5).split(data, 0)
    LeaveOneOut(n_neg=5, use_given_test=False).split(data, 0)


def test_unknown_domain_names_the_available_ones(amazon):
    with pytest.raises(KeyError, match="books.*electronic"):
        LeaveOneOut(domains=["books"]).split(amazon, 0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_neg": 0}, ValueError, "n_neg must be an integer >= 1"),
    ({"ks": []}, ValueError, "ks must be a non-empty list"),
    ({"ks": [10, 0]}, ValueError, "ks must be a non-empty list"),
    ({"ks": [10, 10]}, ValueError, "ks repeats"),
    ({"domains": []}, ValueError, "domains is empty"),
    ({"domains": "phone"}, TypeError, "list of domain names"),
    ({"low_activity": 0}, ValueError, "low_activity must be null or an integer >= 1"),
    ({"low_activity": -2}, ValueError, "low_activity must be null or an integer >= 1"),
    ({"low_activity": True}, ValueError, "low_activity must be null or an integer >= 1"),
    ({"low_activity": 2.5}, ValueError, "low_activity must be null or an integer >= 1"),
])
def test_bad_parameters_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        LeaveOneOut(**kwargs)


def test_the_config_runs_end_to_end(tmp_path):
    from cdrec.config import load_config
    from cdrec.runner import run

    cfg = load_config(ROOT / "configs" / "loo_amazon_sample.yaml", [
        "seeds=[0]", "progress=false", "models.MF.epochs=1", "models.MF.dim=8",
        "models.MF.batch_size=65536", f"output_dir={tmp_path}"])
    out = Path(run(cfg)["dir"])  # loo_amazon_sample+<overrides>
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["Popularity", "MF"]
    for metrics in results.values():
        for name in ("NDCG@10", "MRR", "HR@10", "HR@20", "NDCG@20", "phone/NDCG@10",
                     "electronic/HR@20"):
            assert 0.0 <= metrics[name]["mean"] <= 1.0, name
    pop = results["Popularity"]
    assert pop["NDCG@10"]["mean"] == pytest.approx(
        (pop["phone/NDCG@10"]["mean"] + pop["electronic/NDCG@10"]["mean"]) / 2)
    assert pop["HR@10"]["mean"] > 0.3  # far above chance (0.1): popularity is a real signal


# ---- low-activity users (UCLR Sec. 4.4, Table 3) -------------------------------------------


def _activity_toy() -> CrossDomainData:
    """Two domains of 60 items, every row timestamped (so the held-out rows are known).

    a: u0 items 0,1; u1 2,3,4; u2 5-8; u3 10-15; u4 20,20,21,22 (item 20 twice); u5 item 30
       only (never held out); u6 nothing.
    b: u0 40-45; u1 40,41; u3 40-42; u6 46-48.
    """
    rows = {"a": [(0, [0, 1]), (1, [2, 3, 4]), (2, [5, 6, 7, 8]), (3, list(range(10, 16))),
                  (4, [20, 20, 21, 22]), (5, [30])],
            "b": [(0, list(range(40, 46))), (1, [40, 41]), (3, [40, 41, 42]), (6, [46, 47, 48])]}
    domains = {}
    for name, per_user in rows.items():
        user = torch.tensor([u for u, items in per_user for _ in items])
        item = torch.tensor([i for _, items in per_user for i in items])
        time = torch.arange(1, len(user) + 1)  # later in the list: later in time
        domains[name] = Domain(name, np.arange(60),
                               Interactions(user, item, torch.ones(len(user)), time))
    return CrossDomainData(np.array([f"u{u}" for u in range(7)]), domains)


def _by_hand(ev, users: set[int], ks) -> dict[str, float]:
    """Score = -item: the positive's rank is 1 + its negatives with a smaller id (no ties).
    The metrics averaged over ``users`` in plain Python."""
    values: dict[str, list[float]] = {}
    for u, pos, negs in zip(ev.users.tolist(), ev.positives.tolist(), ev.negatives.tolist(),
                            strict=True):
        if u not in users:
            continue
        rank = 1 + sum(n < pos for n in negs)
        values.setdefault("MRR", []).append(1 / rank)
        for k in ks:
            values.setdefault(f"HR@{k}", []).append(float(rank <= k))
            values.setdefault(f"NDCG@{k}", []).append(1 / math.log2(rank + 1) if rank <= k else 0.0)
    return {name: sum(v) / len(v) for name, v in values.items()}


def test_training_counts_are_distinct_items_per_user_and_domain():
    split = LeaveOneOut(n_neg=5, validation=False).split(_activity_toy(), 0)
    counts = training_counts(split.train)
    assert list(counts) == ["a", "b"]
    # a: the latest item of each user with two or more held out; u4 keeps 20 (twice) and 21.
    assert counts["a"].tolist() == [1, 2, 3, 5, 2, 1, 0]
    assert counts["b"].tolist() == [5, 1, 0, 2, 0, 0, 2]
    with_val = training_counts(LeaveOneOut(n_neg=5).split(_activity_toy(), 0).train)
    assert with_val["a"].tolist() == [1, 1, 2, 4, 1, 1, 0]  # one more item out where two remain
    assert with_val["b"].tolist() == [4, 1, 0, 1, 0, 0, 1]


@pytest.mark.parametrize(("validation", "low"), [
    (False, {"a": {0, 1, 4}, "b": {1, 3, 6}}),     # u2 (3 items) and u3 (5) left out of a
    (True, {"a": {0, 1, 2, 4}, "b": {1, 3, 6}}),    # counted after validation: u2 has 2 left
])
def test_low_activity_metrics_average_exactly_the_users_with_at_most_two_items(validation, low):
    scenario = LeaveOneOut(n_neg=5, ks=[1, 3], validation=validation, low_activity=2)
    split = scenario.split(_activity_toy(), 0)
    model = ScoreFn(lambda d, u, i: -i.double())
    metrics = split.test.evaluate(model)
    for name in ("a", "b"):
        ev = split.test.for_domain(name)
        assert split.info[f"{name}_low_activity_users"] == len(low[name])
        overall = _by_hand(ev, set(ev.users.tolist()), (1, 3))
        restricted = _by_hand(ev, low[name], (1, 3))
        for metric in ("MRR", "HR@1", "NDCG@1", "HR@3", "NDCG@3"):
            assert metrics[f"{name}/{metric}"] == pytest.approx(overall[metric])
            assert metrics[f"{name}/low/{metric}"] == pytest.approx(restricted[metric])
    for metric in ("MRR", "NDCG@3"):
        assert metrics[f"low/{metric}"] == pytest.approx(
            (metrics[f"a/low/{metric}"] + metrics[f"b/low/{metric}"]) / 2)
    assert split.info["low_activity"] == 2
    # Per user: the group's columns hold the user's own value inside the group, NaN outside.
    table = split.test.per_user(model)
    assert list(table.columns) == ["domain", "user", "NDCG@1", "MRR", "HR@1", "HR@3", "NDCG@3",
                                   "low/NDCG@1", "low/MRR", "low/HR@1", "low/HR@3",
                                   "low/NDCG@3"]
    inside = table.apply(lambda r: r.user in low[r.domain], axis=1)
    assert table.loc[~inside, "low/MRR"].isna().all()
    np.testing.assert_array_equal(table.loc[inside, "low/MRR"], table.loc[inside, "MRR"])
    if validation:  # early stopping and model selection see the overall metric only
        assert not any("low" in m for m in split.validation.evaluate(model))
    assert split.test.main_metric == "NDCG@1"


def test_low_activity_uses_the_training_counts_of_the_train_view(amazon):
    split = LeaveOneOut(low_activity=9).split(amazon, 0)
    counts = training_counts(split.train)
    for name in ("phone", "electronic"):
        ev = split.test.for_domain(name)
        assert torch.equal(ev.groups["low"], counts[name][ev.users] <= 9)
        assert split.info[f"{name}_low_activity_users"] == int((counts[name][ev.users] <= 9).sum())
        assert split.validation.for_domain(name).groups == {}
    assert 0 < split.info["phone_low_activity_users"] < split.info["phone_test_users"]


def test_a_domain_without_low_activity_users_reports_nan_for_them():
    toy = _activity_toy()
    busy = Interactions(torch.tensor([0, 0, 0]), torch.tensor([40, 41, 42]), torch.ones(3),
                        torch.tensor([1, 2, 3]))  # b: u0 alone, 2 items after the test one
    data = toy.replace_domains({"a": toy["a"], "b": toy["b"].with_interactions(busy)})
    split = LeaveOneOut(n_neg=5, validation=False, low_activity=1).split(data, 0)
    assert split.info["a_low_activity_users"] == 1 and split.info["b_low_activity_users"] == 0
    values = split.test.evaluate(ScoreFn(lambda d, u, i: -i.double()))
    assert not math.isnan(values["a/low/MRR"]) and not math.isnan(values["b/MRR"])
    assert math.isnan(values["b/low/MRR"]) and math.isnan(values["low/MRR"])  # undefined


def test_low_activity_off_leaves_the_split_as_it_was(amazon, split):
    assert "low_activity" not in split.info
    assert not any("low" in key for key in split.info)
    assert all(split.test.for_domain(n).groups == {} for n in split.test.domains)
    on = LeaveOneOut(low_activity=2).split(amazon, 0)
    for name in split.test.domains:  # the same users, positives and negatives
        a, b = split.test.for_domain(name), on.test.for_domain(name)
        assert torch.equal(a.negatives, b.negatives) and torch.equal(a.positives, b.positives)
        assert torch.equal(split.validation.for_domain(name).negatives,
                           on.validation.for_domain(name).negatives)


def test_the_shipped_config_keeps_its_fingerprint_and_low_activity_changes_it():
    from cdrec.config import fingerprint, load_config

    path = ROOT / "configs" / "loo_amazon_sample.yaml"
    cfg = load_config(path)
    assert cfg.scenario.build().low_activity is None
    # The runner hashes the params as written: a new field at its default adds nothing.
    assert "low_activity" not in cfg.scenario.model_dump(mode="json")["params"]
    model = {"model": "Popularity"}
    on = load_config(path, ["scenario.params.low_activity=2"])
    assert fingerprint(on, model, 0) != fingerprint(cfg, model, 0)  # other records: refit
    with pytest.raises(ValueError, match="low_activity"):
        load_config(path, ["scenario.params.low_activity=two"])


def test_the_runner_reports_and_tests_the_low_activity_users(tmp_path):
    """Popularity and BPR (one epoch) on the Amazon sample, whose users all hold 8+ training
    items per domain: low_activity 9 makes a group of a few hundred users per domain."""
    import pandas as pd
    from scipy.stats import wilcoxon

    from cdrec.config import load_config, load_data
    from cdrec.runner import run

    cfg = load_config(ROOT / "configs" / "loo_amazon_sample.yaml", [
        "seeds=[0,1]", "progress=false", "save_models=false",
        "models={Popularity: {}, BPR: {epochs: 1, batch_size: 65536}}",
        "scenario.params.low_activity=9", "compare=[[BPR, Popularity]]",
        f"output_dir={tmp_path}"])
    out = Path(run(cfg)["dir"])
    results = json.loads((out / "results.json").read_text())
    users = pd.read_parquet(out / "per_user.parquet")
    data = load_data(cfg.data)
    for seed in (0, 1):
        split = cfg.scenario.build().split(data, seed)
        counts = training_counts(split.train)
        for name in ("phone", "electronic"):
            rows = users[(users.seed == seed) & (users.domain == name) & (users.model == "BPR")]
            low = counts[name][torch.tensor(rows.user.to_numpy())] <= 9
            assert np.array_equal(rows["low/NDCG@10"].notna().to_numpy(), low.numpy())
            assert split.info[f"{name}_low_activity_users"] == int(low.sum())
            for model in ("Popularity", "BPR"):
                mine = users[(users.seed == seed) & (users.domain == name)
                             & (users.model == model)]
                assert results[model][f"{name}/low/NDCG@10"]["per_seed"][seed] == \
                    pytest.approx(mine["low/NDCG@10"].mean())  # pandas skips the NaN
    for model in ("Popularity", "BPR"):
        cell = results[model]
        assert cell["low/MRR"]["mean"] == pytest.approx(
            (cell["phone/low/MRR"]["mean"] + cell["electronic/low/MRR"]["mean"]) / 2)
        assert "validation_NDCG@10" in cell and "validation_low/NDCG@10" not in cell
    # Paired tests on the group's users only, against the floor and head to head.
    signif = json.loads((out / "significance.json").read_text())
    assert signif["best_floor"] == "Popularity"
    pairs = users.pivot_table(index=["seed", "domain", "user"], columns="model",
                              values="low/NDCG@10").dropna()
    test = signif["tests"]["BPR"]["Popularity"]["low/NDCG@10"]
    assert test["n"] == len(pairs) == int(users[users.model == "BPR"]["low/NDCG@10"].notna().sum())
    assert test["wilcoxon_p"] == pytest.approx(wilcoxon(pairs.BPR, pairs.Popularity).pvalue)
    duel = signif["head_to_head"][0]["tests"]
    assert duel["low/MRR"]["n"] == test["n"] and "MRR" in duel
    phone = signif["per_domain"]["phone"]["tests"]["BPR"]["Popularity"]["phone/low/NDCG@10"]
    assert phone["n"] == int(users[(users.model == "BPR") & (users.domain == "phone")]
                             ["low/NDCG@10"].notna().sum())
    # results.md: the main table as before, then the group beside the overall metrics per domain.
    text = (out / "results.md").read_text()
    main = text.split("\n\n")[1]
    assert main.startswith("| model | NDCG@10 | MRR | HR@10 | HR@20 | NDCG@20 | chosen_epoch")
    assert "low/" not in main
    assert "| BPR | Popularity | low/NDCG@10 |" in text
    # Head to head in each domain too, on that domain's pairs.
    assert "phone head to head (paired over the (seed, user) pairs of phone)" in text
    phone_duel = signif["per_domain"]["phone"]["head_to_head"][0]["tests"]["phone/NDCG@10"]
    assert (f"| BPR | Popularity | phone/NDCG@10 | {phone_duel['mean_a']:.4f} | "
            f"{phone_duel['mean_b']:.4f} |") in text
    assert "## Low-activity users: test users with at most 9 training interactions" in text
    for name in ("phone", "electronic"):
        assert f"{name} (tested on the (seed, user) pairs of {name}; " in text
    assert text.count("| model | NDCG@10 | MRR | HR@10 | HR@20 | NDCG@20 | low/NDCG@10 |") == 3


def test_low_activity_leaves_out_cold_users_and_warns_on_an_empty_group() -> None:
    # Clusters: in "b" every user keeps 1 training item (3 minus test and validation), in "a" 10.
    with pytest.warns(UserWarning, match="domain 'a': no test user has 1 to 2 training items"):
        split = LeaveOneOut(n_neg=20, low_activity=2).split(two_domain_clusters(), 0)
    assert split.info["a_low_activity_users"] == 0
    assert split.info["b_low_activity_users"] == split.info["b_test_users"]
    # A shipped test row of a user with no training item in the domain: cold, not low-activity.
    inter = Interactions(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 3]),
                         torch.ones(6))
    given = Interactions(torch.tensor([0, 1, 2]), torch.tensor([3, 2, 4]), torch.ones(3))
    dom = Domain("d", np.arange(30), inter, given_test=given)
    data = CrossDomainData(np.arange(3), {"d": dom}, name="cold")
    with pytest.warns(UserWarning, match="domain 'd'"):
        split = LeaveOneOut(n_neg=5, low_activity=2, validation=False).split(data, 0)
    assert split.info["d_test_users"] == 3
    assert split.info["d_low_activity_users"] == 0  # users 0, 1 hold 3 items; user 2 holds none
