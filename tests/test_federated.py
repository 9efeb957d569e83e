"""FedMetaEM on Flower's simulation engine (one ClientApp node per device, Ray actors on
127.0.0.1), on real Douban ratings of a few users: one Flower run with 30 % of each round's
devices failing and every outgoing device message recorded, checked against the vectorised
simulation of the same rounds, for what leaves a device and for the bytes measured."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from cdrec.data.catalog import load_sample
from cdrec.federated.devices import DeviceStore
from cdrec.models import build_model
from cdrec.models.coldstart.transfer import restrict_to_users
from cdrec.scenarios import build_scenario
from cdrec.train import FitContext

pytest.importorskip("flwr")

SETTINGS = {"epochs": 3, "devices_per_round": 8, "failure_rate": 0.3, "lr": 0.01,
            "base_config": {"epochs": 3, "dim": 8, "common_dim": 4, "hidden": 16, "lr": 0.01,
                            "holdout": 0.0}}


def small_split():
    """Douban sample, Book -> Music, restricted to 48 users (so 48 Flower nodes)."""
    data = load_sample("douban")
    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    users = torch.unique(split.train.data["book"].interactions.user)[:48]
    return split, restrict_to_users(split.train, users)


def fit(engine: str, train, record_dir: Path | None = None, **settings):
    torch.manual_seed(0)
    model = build_model("FedMetaEM", engine=engine, workers=2,
                        record_dir=None if record_dir is None else str(record_dir),
                        **{**SETTINGS, **settings})
    context = FitContext(seed=0, progress=False)
    model.fit(train, None, context)
    return model, pd.DataFrame(model.rounds_)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    split, train = small_split()
    record = tmp_path_factory.mktemp("messages")
    flower = fit("flower", train, record)
    vectorised = fit("vectorised", train)
    secure_record = tmp_path_factory.mktemp("secure_messages")
    secure = fit("flower", train, secure_record, secure_aggregation=True, failure_rate=0.0)
    plain = fit("vectorised", train, failure_rate=0.0)
    return {"train": train, "split": split, "record": record, "flower": flower,
            "vectorised": vectorised, "secure": secure, "secure_record": secure_record,
            "plain": plain}


def test_flower_rounds_equal_the_vectorised_simulation(runs) -> None:
    (flower, f_rounds), (vector, v_rounds) = runs["flower"], runs["vectorised"]
    assert len(f_rounds) == len(v_rounds) > 10
    # The same devices failed in the same rounds, and the same rows were trained on.
    assert f_rounds["failed"].tolist() == v_rounds["failed"].tolist()
    assert f_rounds["rows"].tolist() == v_rounds["rows"].tolist()
    for (name, a), (_, b) in zip(flower.state_dict().items(), vector.state_dict().items(),
                                 strict=True):
        assert torch.allclose(a, b, atol=1e-4), name


def test_thirty_percent_failures_are_counted_and_training_still_converges(runs) -> None:
    _, rounds = runs["flower"]
    failed = rounds["failed"].sum() / rounds["sampled"].sum()
    assert 0.2 < failed < 0.4                      # about 30 % of the sampled devices
    assert (rounds["failed"] < rounds["sampled"]).all()   # every round completed
    base = rounds[rounds["stage"] == "rounds_base_book"]["loss"].tolist()
    assert all(math.isfinite(x) for x in base)
    assert sum(base[-3:]) / 3 < 0.5 * sum(base[:3]) / 3   # the pretrain loss fell


def test_no_rating_value_or_item_id_is_sent_as_such(runs) -> None:
    """What a device sends holds no rating and no item id as data: gradients (float arrays of
    data-independent shapes), its row count, its loss sum, its user index. What the gradients
    reveal is another matter, measured below and in docs/metaem.md."""
    store = DeviceStore.from_view(runs["train"])
    records = [torch.load(p, weights_only=False) for p in sorted(runs["record"].glob("*.pt"))]
    grads = [r for r in records if r["message_type"] == "train.grad" and not r["error"]]
    assert len(grads) > 50 and any(r["message_type"] == "query" for r in records)
    allowed_values = {"stats/n_rows", "stats/loss_sum", "stats/clipped", "device/user",
                      "device/split", "device/has.book", "device/has.music"}
    n_items = {d: int(runs["train"].data[d].n_items) for d in ("book", "music")}
    for record in records:
        if record["error"]:
            continue
        assert set(record["values"]) <= allowed_values, record["values"].keys()
        assert all(not isinstance(v, list) for v in record["values"].values())
        mine = [store.device(record["partition"], d) for d in ("book", "music")]
        ratings = [d.ratings for d in mine if d.ratings.numel() >= 3]
        for name, array in record["arrays"].items():
            assert name.startswith("upload/") and array.is_floating_point(), name
            if name == "upload/common":   # dense over the catalogue: the same shape for all
                assert array.shape[0] in n_items.values()
            flat = array.flatten()
            for r in ratings:             # no device's rating sequence appears in an upload
                if flat.numel() >= r.numel():
                    windows = flat.unfold(0, r.numel(), 1)
                    assert not (windows == r).all(1).any(), name
    # the rows count is the one per-device number uploaded besides the gradients
    assert all(r["values"]["stats/n_rows"] >= 1 for r in grads)


def test_bytes_are_measured_on_the_flower_messages(runs) -> None:
    flower, rounds = runs["flower"]
    base = rounds[rounds["stage"] == "rounds_base_book"]
    n_items, k_p = flower.source_.item_factors.weight.shape
    mlp = sum(p.numel() for p in flower.source_.item_mlp.parameters())
    numbers = n_items * k_p + k_p * flower.source_.config.k_c + flower.source_.config.dim + mlp
    # float32 on the wire plus Flower's framing: at least the numbers, not wildly more
    assert (base["bytes_down_per_device"] > 4 * numbers).all()
    assert (base["bytes_down_per_device"] < 4 * numbers * 1.2).all()
    mapping = rounds[rounds["stage"] == "rounds_mapping"]
    # a mapping upload is the per-user gradients only (V^c and MLP_item are frozen)
    assert (mapping["bytes_up_per_device"] < 0.1 * base["bytes_up_per_device"].mean()).all()
    _, vector_rounds = runs["vectorised"]
    assert vector_rounds["bytes_down_per_device"].isna().all()   # not measured without Flower


def test_the_server_reads_each_device_s_items_off_a_plain_upload(runs) -> None:
    flower, _ = runs["flower"]
    report = flower.fit_report_
    assert report["leakage_uploads"] > 10
    # Every item it sees was rated (V^c enters a device's loss only through its rated rows, so
    # this checks the measurement), and most rated items are seen.
    assert report["leakage_precision"] == 1.0
    assert report["leakage_recall"] > 0.7


def test_secure_aggregation_hides_which_device_rated_what(runs) -> None:
    secure, rounds = runs["secure"]
    report = secure.fit_report_
    # Only the round's aggregate: the server attributes the union of 8 devices' items to each.
    assert report["leakage_precision"] < 0.3
    # The per-user gradients still travel in the clear and are measured too.
    assert report["subspace_uploads"] == report["leakage_uploads"]
    # No V^c gradient leaves a device in the clear: plain uploads are the per-user ones.
    for path in runs["secure_record"].glob("*.pt"):
        record = torch.load(path, weights_only=False)
        if record["message_type"] == "train.grad" and not record["error"]:
            assert set(record["arrays"]) == {"upload/user", "upload/private"}
    assert (rounds["failed"] == 0).all()
    # SecAgg+ quantises: training follows the plain rounds closely, not exactly.
    _, plain_rounds = runs["plain"]
    base = rounds["stage"] == "rounds_base_book"
    secure_loss = rounds[base]["loss"].to_numpy()
    plain_loss = plain_rounds[plain_rounds["stage"] == "rounds_base_book"]["loss"].to_numpy()
    assert abs(secure_loss - plain_loss).max() < 0.05 * plain_loss.mean()
