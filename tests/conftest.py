"""Shared fixtures: the shipped real sample and small hand-built cross-domain data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.models.recommender import Recommender

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def douban_sample() -> CrossDomainData:
    from cdrec.data.catalog import sample_path
    from cdrec.data.readers import read_douban

    return read_douban(sample_path("douban"))


def make_transfer_data(n_users: int = 600, n_items: int = 120, per_user: int = 25,
                       seed: int = 0, noise: float = 0.3) -> CrossDomainData:
    """Two domains whose ratings share each user's taste: r = 3 + b_u + b_i + p_u.q_i + noise,
    with b_u and p_u the same in both domains. Transfer has real signal to find here."""
    rng = np.random.default_rng(seed)
    b_u = rng.normal(0, 0.8, n_users)
    p_u = rng.normal(0, 0.5, (n_users, 4))
    domains = {}
    for name in ("src", "tgt"):
        b_i = rng.normal(0, 0.5, n_items)
        q_i = rng.normal(0, 0.5, (n_items, 4))
        users = np.repeat(np.arange(n_users), per_user)
        items = np.concatenate([rng.choice(n_items, per_user, replace=False)
                                for _ in range(n_users)])
        r = 3 + b_u[users] + b_i[items] + (p_u[users] * q_i[items]).sum(1)
        r = np.clip(r + rng.normal(0, noise, r.shape), 1, 5)
        inter = Interactions(torch.from_numpy(users), torch.from_numpy(items),
                             torch.tensor(r, dtype=torch.float32))
        domains[name] = Domain(name, np.arange(n_items), inter, rating_scale=(1.0, 5.0))
    return CrossDomainData(np.arange(n_users), domains, name="synthetic")


@pytest.fixture(scope="session")
def transfer_data() -> CrossDomainData:
    return make_transfer_data()


class ScoreFn(Recommender):
    """A fake fitted model whose score is a given function of (domain, users, items)."""

    supports = frozenset({"coldstart", "leave_one_out", "kfold_rating"})

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.fitted_ = True

    def _fit(self, train, validation, context) -> None:
        raise NotImplementedError("ScoreFn is built fitted; it never trains")

    def predict(self, domain, users, items):
        return self.fn(domain, users, items).float()

    def architecture(self):  # no learned modules: only the function it was built with
        return {}

    def _build(self, architecture) -> None:
        pass


def triples(data, domain):
    """Rows of a domain as (original user, original item, rating), sorted."""
    rows = data[domain].interactions
    users = data.user_ids[rows.user.numpy()]
    items = data[domain].item_ids[rows.item.numpy()]
    return sorted(zip(users.tolist(), items.tolist(), rows.rating.tolist(), strict=True))


def two_domain_clusters(n_users: int = 240, n_items: int = 100, n_clusters: int = 5,
                        dense: int = 12, sparse: int = 3, seed: int = 0) -> CrossDomainData:
    """Users in 5 clusters take items of their cluster's block in both domains: many in "a",
    three each in "b" (where a user's own items tell little; the shared cluster, seen in "a",
    tells which block)."""
    rng = np.random.default_rng(seed)
    size = n_items // n_clusters
    cluster = np.arange(n_users) % n_clusters
    domains = {}
    for name, per_user in (("a", dense), ("b", sparse)):
        users = np.repeat(np.arange(n_users), per_user)
        items = np.concatenate([cluster[u] * size + rng.choice(size, per_user, replace=False)
                                for u in range(n_users)])
        inter = Interactions(torch.from_numpy(users), torch.from_numpy(items),
                             torch.ones(len(users)))
        domains[name] = Domain(name, np.arange(n_items), inter)
    return CrossDomainData(np.arange(n_users), domains, name="clusters2")
