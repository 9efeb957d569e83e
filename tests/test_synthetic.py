"""The synthetic scale data set: seeded, about the size asked for, and skewed like real logs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdrec.data.synthetic import skewed_two_domain


def test_seeded_sized_and_skewed():
    data = skewed_two_domain(200_000, seed=3)
    again, other = skewed_two_domain(200_000, seed=3), skewed_two_domain(200_000, seed=4)
    a = data["a"].interactions
    assert torch.equal(a.user, again["a"].interactions.user)
    assert torch.equal(a.rating, again["a"].interactions.rating)
    assert not torch.equal(a.item[:1000], other["a"].interactions.item[:1000])
    total = sum(len(d.interactions) for d in data.domains.values())
    assert 0.8 * 200_000 <= total <= 200_000  # duplicate draws dropped
    for dom in data.domains.values():
        inter = dom.interactions
        keys = inter.user * dom.n_items + inter.item
        assert torch.unique(keys).numel() == len(inter)  # one rating per (user, item)
        assert set(inter.rating.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        counts = torch.bincount(inter.item, minlength=dom.n_items).sort(descending=True).values
        assert counts[: dom.n_items // 100].sum() > 0.1 * len(inter)  # top 1 % of items: > 10 %
        activity = torch.bincount(inter.user)[inter.users_present()].float()
        assert activity.max() > 10 * activity.median()  # heavy-tailed users
    overlap = data.overlap_users("a", "b").numel() / data.n_users
    assert 0.4 < overlap < 0.6  # overlap=0.5 by default


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 1000"):
        skewed_two_domain(10)
    with pytest.raises(ValueError, match="overlap"):
        skewed_two_domain(5000, overlap=0.0)


def test_resample_users_copies_whole_users_in_every_domain() -> None:
    from cdrec.data.catalog import load_sample
    from cdrec.data.synthetic import resample_users

    data = load_sample("douban")
    grown = resample_users(data, 3.0, seed=1)
    assert grown.n_users == 3 * data.n_users
    for name, dom in grown.domains.items():
        assert 2.5 < len(dom.interactions) / len(data[name].interactions) < 3.5
        assert dom.n_items == data[name].n_items
    # Every new user holds exactly the (item, rating) rows of the user it was drawn from.
    for new in (0, 17, 2099):
        ids = np.asarray(data.user_ids, dtype=str)
        original = int(np.flatnonzero(ids == grown.user_ids[new].split("#")[0])[0])
        for name in data.domains:
            a, b = data[name].interactions, grown[name].interactions
            rows_a = sorted(zip(a.item[a.user == original].tolist(),
                                a.rating[a.user == original].tolist()))
            rows_b = sorted(zip(b.item[b.user == new].tolist(), b.rating[b.user == new].tolist()))
            assert rows_a == rows_b
    # Overlap users stay overlap users: the share of users active in both domains is kept.
    share = len(data.overlap_users("book", "music")) / data.n_users
    grown_share = len(grown.overlap_users("book", "music")) / grown.n_users
    assert abs(share - grown_share) < 0.05
    with pytest.raises(ValueError, match="factor must be positive"):
        resample_users(data, 0)
