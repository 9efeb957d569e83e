"""MetaEM's pretrain round split between server and devices: with every device in the round it
is exactly the centralised full-batch Adam step, and a device's upload carries gradients only
(V^c's as a dense matrix: no item id travels, though its nonzero rows still show the rated
items)."""

from __future__ import annotations

import copy

import torch

from cdrec.data.catalog import load_sample
from cdrec.federated.protocol import DeviceData, MetaEMServer, device_gradients
from cdrec.models.coldstart.metaem import MetaEmbeddingBase, MetaEmbeddingConfig


def music_devices(n_users: int = 40) -> tuple[MetaEmbeddingBase, dict[int, DeviceData]]:
    """A small MetaEmbedding base and the real Douban music ratings of its first users, one
    device per user."""
    music = load_sample("douban")["music"].interactions
    users = torch.unique(music.user)[:n_users]
    rows = music.select(torch.isin(music.user, users))
    torch.manual_seed(0)
    config = MetaEmbeddingConfig(dim=8, common_dim=4, private_dim=6, hidden=16, lr=0.01)
    base = MetaEmbeddingBase(int(users.max()) + 1, int(rows.item.max()) + 1, config,
                             implicit=False, generator=torch.Generator().manual_seed(0))
    devices = {int(u): DeviceData(rows.item[rows.user == u], rows.rating[rows.user == u])
               for u in users}
    return base, devices


def federated_round(server: MetaEMServer, devices: dict[int, DeviceData],
                    chosen: list[int]) -> float:
    ids = torch.tensor(chosen)
    uploads = [device_gradients(d, devices[u], server.base.item_mlp)
               for d, u in zip(server.downloads(ids), chosen, strict=True)]
    return server.step(ids, uploads)


def test_a_round_with_every_device_is_the_centralised_full_batch_step() -> None:
    base, devices = music_devices()
    central = copy.deepcopy(base)
    server = MetaEMServer(base)
    optimizer = torch.optim.Adam(central.parameters(), lr=0.01,
                                 weight_decay=central.config.weight_decay)
    users = torch.cat([torch.full((len(d.items),), u) for u, d in devices.items()])
    items = torch.cat([d.items for d in devices.values()])
    ratings = torch.cat([d.ratings for d in devices.values()])
    for _ in range(3):  # several rounds: Adam's moments must agree too
        fed_loss = federated_round(server, devices, list(devices))
        optimizer.zero_grad()
        loss = (central(users, items) - ratings).pow(2).mean()  # Eq. 8 over every row
        loss.backward()
        optimizer.step()
        assert abs(fed_loss - float(loss.detach())) < 1e-4
    for (name, fed), (_, cen) in zip(base.named_parameters(), central.named_parameters(),
                                     strict=True):
        assert torch.allclose(fed, cen, atol=1e-6), name


def test_an_upload_holds_gradients_only_and_v_c_as_a_dense_matrix() -> None:
    base, devices = music_devices(5)
    server = MetaEMServer(base)
    user = next(iter(devices))
    (download,) = server.downloads(torch.tensor([user]))
    upload = device_gradients(download, devices[user], base.item_mlp)
    n_items, k_p = base.item_factors.weight.shape
    assert upload.common.shape == (n_items, k_p)       # no list of item ids travels
    assert download.numel() - sum(t.numel() for t in download.item_mlp.values()) == (
        n_items * k_p + k_p * 6 + 8)                    # n k_p + k_p k_c + k
    rated = set(devices[user].items.tolist())
    nonzero = set(upload.common.abs().sum(1).nonzero().squeeze(1).tolist())
    # What the server can still read off one upload: the rated items (the leakage that secure
    # aggregation is for, issue 17).
    assert nonzero == rated
