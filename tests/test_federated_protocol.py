"""A federated round split between server and devices (cdrec.federated.protocol), with no
transport: with every device in the round it is exactly the centralised full-batch Adam step;
the vectorised simulation aggregates to the same gradients; an upload carries gradients only
(V^c's as a dense matrix: no item id travels, though its nonzero rows still show the rated
items); the mapping round trains f alone. Also the device data file."""

from __future__ import annotations

import copy

import pytest
import torch

from cdrec.data.catalog import load_sample
from cdrec.federated.devices import DeviceStore
from cdrec.federated.protocol import (
    DeviceData,
    FederatedStage,
    aggregate,
    device_gradients,
    vectorised_round,
)
from cdrec.models import build_model
from cdrec.models.bases.mf import MFBase, MFConfig
from cdrec.models.coldstart.metaem import MetaEmbeddingBase, MetaEmbeddingConfig
from cdrec.scenarios import build_scenario
from cdrec.train import FitContext


def music_devices(n_users: int = 40) -> tuple[torch.Tensor, dict[int, DeviceData], int, int]:
    """The real Douban music ratings of the sample's first users, one device per user."""
    music = load_sample("douban")["music"].interactions
    users = torch.unique(music.user)[:n_users]
    rows = music.select(torch.isin(music.user, users))
    devices = {int(u): DeviceData(rows.item[rows.user == u], rows.rating[rows.user == u])
               for u in users}
    return users, devices, int(users.max()) + 1, int(rows.item.max()) + 1


def metaem_base(n_users: int, n_items: int) -> MetaEmbeddingBase:
    torch.manual_seed(0)
    config = MetaEmbeddingConfig(dim=8, common_dim=4, private_dim=6, hidden=16, lr=0.01)
    return MetaEmbeddingBase(n_users, n_items, config, implicit=False,
                             generator=torch.Generator().manual_seed(0))


def pretrain_stage(base):
    """FedMetaEM's or FedMF's pretrain stage over ``base``."""
    name = "FedMetaEM" if isinstance(base, MetaEmbeddingBase) else "FedMF"
    return build_model(name, engine="vectorised")._pretrain_stage(base)


def federated_round(stage: FederatedStage, devices: dict[int, DeviceData],
                    chosen: list[int]) -> float:
    ids = torch.tensor(chosen)
    uploads = [device_gradients(d, devices[u], stage.scorer, stage.spec, stage.wanted(d))
               for d, u in zip(stage.downloads(ids), chosen, strict=True)]
    return stage.step(ids, uploads)


@pytest.fixture
def float64():
    """Doubles while the test runs. In float32 the two sums of a row's gradient differ in the
    last bits, and Adam's g / sqrt(v) turns that into up to 2.4e-6 on a coordinate whose
    gradient nearly cancels (an item rated once): a CI machine went past atol 1e-6 there. In
    float64 the federated and central steps agree to 1e-15, so the check can be exact."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def test_a_round_with_every_device_is_the_centralised_full_batch_step(float64) -> None:
    users, devices, n_users, n_items = music_devices()
    base = metaem_base(n_users, n_items)
    central = copy.deepcopy(base)
    stage = pretrain_stage(base)
    optimizer = torch.optim.Adam(central.parameters(), lr=0.01,
                                 weight_decay=central.config.weight_decay)
    user_rows = torch.cat([torch.full((len(d.items),), u) for u, d in devices.items()])
    items = torch.cat([d.items for d in devices.values()])
    ratings = torch.cat([d.ratings for d in devices.values()])
    for _ in range(3):  # several rounds: Adam's moments must agree too
        fed_loss = federated_round(stage, devices, list(devices))
        optimizer.zero_grad()
        loss = (central(user_rows, items) - ratings).pow(2).mean()  # Eq. 8 over every row
        loss.backward()
        optimizer.step()
        assert abs(fed_loss - float(loss.detach())) < 1e-10
    for (name, fed), (_, cen) in zip(base.named_parameters(), central.named_parameters(),
                                     strict=True):
        assert fed.dtype == torch.float64
        assert torch.allclose(fed, cen, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("kind", ["metaem", "mf"])
def test_the_vectorised_round_aggregates_to_the_per_device_uploads(kind: str) -> None:
    users, devices, n_users, n_items = music_devices(30)
    if kind == "metaem":
        base = metaem_base(n_users, n_items)
    else:
        base = MFBase(n_users, n_items, MFConfig(dim=8, sparse=False), implicit=False,
                      global_mean=3.5, generator=torch.Generator().manual_seed(0))
    stage = pretrain_stage(base)
    chosen = users[::2]
    data = [devices[int(u)] for u in chosen]
    uploads = [device_gradients(d, data[k], stage.scorer, stage.spec, stage.wanted(d))
               for k, d in enumerate(stage.downloads(chosen))]
    per_user, shared, loss, rows = aggregate(stage, uploads)
    v_user, v_shared, v_loss, v_rows = vectorised_round(stage, chosen, data)
    assert rows == v_rows == sum(d.items.numel() for d in data)
    assert v_loss == pytest.approx(loss, rel=1e-5)
    assert set(per_user) == set(v_user) and set(shared) == set(v_shared) == set(
        stage.trained_shared)
    for name in per_user:
        assert torch.allclose(per_user[name], v_user[name], atol=1e-6), name
    for name in shared:
        assert shared[name].abs().sum() > 0, name   # the gradient reaches every shared tensor
        assert torch.allclose(shared[name], v_shared[name], atol=1e-6), name


def test_an_upload_holds_gradients_only_and_v_c_as_a_dense_matrix() -> None:
    users, devices, n_users, n_items = music_devices(5)
    base = metaem_base(n_users, n_items)
    stage = pretrain_stage(base)
    user = int(users[0])
    (download,) = stage.downloads(torch.tensor([user]))
    upload = device_gradients(download, devices[user], stage.scorer, stage.spec,
                              stage.wanted(download))
    k_p = base.config.common_dim
    assert upload.grads["common"].shape == (n_items, k_p)      # no list of item ids travels
    mlp = sum(t.numel() for k, t in download.items() if k.startswith("item_mlp."))
    assert sum(t.numel() for t in download.values()) - mlp == (
        n_items * k_p + k_p * 6 + 8)                            # n k_p + k_p k_c + k
    rated = set(devices[user].items.tolist())
    nonzero = set(upload.grads["common"].abs().sum(1).nonzero().squeeze(1).tolist())
    # What the server can still read off one upload: the rated items (the leakage that secure
    # aggregation is for, issue 17).
    assert nonzero == rated


def test_a_mapping_round_trains_the_mapping_alone_through_the_frozen_target() -> None:
    data = load_sample("douban")
    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    model = build_model("FedMetaEM", engine="vectorised", epochs=1, devices_per_round=1000,
                        base_config={"epochs": 1, "dim": 8, "hidden": 16})
    model.fit(split.train, None, FitContext(seed=0, progress=False))
    stage = model._mapping_stage()
    assert stage.trained_shared == []
    frozen = {k: v.clone() for k, v in model.target_.state_dict().items()}
    before = {k: v.clone() for k, v in model.transfer_.state_dict().items()}
    store = DeviceStore.from_view(split.train)
    part = store.partition_of()
    users = store.users[store.indptr["music"].diff() > 0][:50]
    devices = [store.device(part[int(u)], "music") for u in users]
    per_user, shared, _, _ = vectorised_round(stage, users, devices)
    assert shared == {} and set(per_user) == {"user", "private"}
    stage.apply(users, per_user, shared, 0.0)
    assert all(torch.equal(v, model.target_.state_dict()[k]) for k, v in frozen.items())
    moved = [k for k, v in model.transfer_.state_dict().items() if not torch.equal(v, before[k])]
    assert moved == list(before)                  # the gradient reaches every layer of f


def test_device_store_round_trip_and_errors(tmp_path) -> None:
    data = load_sample("douban")
    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    store = DeviceStore.from_view(split.train)
    music = split.train.data["music"].interactions
    user = int(music.user[0])
    mine = store.device(store.partition_of()[user], "music")
    assert sorted(mine.items.tolist()) == sorted(music.item[music.user == user].tolist())
    assert sum(len(store.device(p, "book").items) for p in range(len(store))) == len(
        split.train.data["book"].interactions)
    loaded = DeviceStore.load(store.save(tmp_path / "devices.pt"))
    assert torch.equal(loaded.users, store.users)
    one = store.subset([3])
    assert len(one) == 1 and torch.equal(one.device(0, "book").items,
                                         store.device(3, "book").items)
    # a device file names the whole split it was cut from; another split has another name
    assert one.fingerprint == store.fingerprint == loaded.fingerprint
    other = DeviceStore.from_view(
        build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 1).train)
    assert other.fingerprint != store.fingerprint
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DeviceStore.load(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a cdrec device data file"):
        DeviceStore.load(tmp_path / "other.pt")
    with pytest.raises(IndexError, match="partition"):
        store.device(len(store), "book")


def test_a_per_user_gradient_reveals_the_items_of_a_device_with_few_ratings() -> None:
    """dL/dV^p_u = sum_j V^c[j]^T h_j over the device's items: with fewer items than k_p their
    V^c rows span a subspace the server can test every item against (subspace_items)."""
    from cdrec.federated.flower import subspace_items

    users, devices, n_users, n_items = music_devices(40)
    base = metaem_base(n_users, n_items)               # k_p = 4
    stage = pretrain_stage(base)
    few = next(u for u, d in devices.items() if 2 <= d.items.numel() < 4)
    many = next(u for u, d in devices.items() if d.items.numel() > 10)
    common = base.item_factors.weight.detach()
    for user, expect_exact in ((few, True), (many, False)):
        (download,) = stage.downloads(torch.tensor([user]))
        upload = device_gradients(download, devices[user], stage.scorer, stage.spec,
                                  stage.wanted(download))
        guessed = set(subspace_items(upload.grads["private"], common).tolist())
        rated = set(devices[user].items.tolist())
        if expect_exact:
            assert guessed == rated
        else:   # full rank: every item fits, so the guess says nothing
            assert len(guessed) == n_items


def test_secure_settings_are_checked_and_too_few_devices_get_no_secure_aggregate() -> None:
    from cdrec.federated.secure import SecureSettings, secure_mean

    with pytest.raises(ValueError, match="odd num_shares"):
        SecureSettings(num_shares=4)
    with pytest.raises(ValueError, match="reconstruction_threshold"):
        SecureSettings(num_shares=5, reconstruction_threshold=5)
    outcome = secure_mean(None, {1: 5, 2: 3}, ["common"], SecureSettings(), "r")  # type: ignore[arg-type]
    assert outcome.mean == {} and outcome.survivors == []


def test_settings_a_deployment_cannot_honour_are_refused() -> None:
    data = load_sample("douban")
    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    model = build_model("FedMetaEM", engine="deployment", failure_rate=0.3)
    with pytest.raises(ValueError, match="ClientApp settings"):
        model.fit(split.train, None, FitContext(seed=0, progress=False))
    model = build_model("FedMetaEM", engine="vectorised", secure_aggregation=True)
    with pytest.raises(ValueError, match="runs on Flower"):
        model.fit(split.train, None, FitContext(seed=0, progress=False))
