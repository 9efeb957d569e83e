"""k_core and binarize on hand-built data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdrec.data import CrossDomainData, DataWarning, Domain, Interactions, binarize, k_core


def inter(rows, ratings=None, timestamps=None) -> Interactions:
    users = torch.tensor([u for u, _ in rows], dtype=torch.long)
    items = torch.tensor([i for _, i in rows], dtype=torch.long)
    rating = torch.ones(len(rows)) if ratings is None else torch.tensor(ratings,
                                                                        dtype=torch.float32)
    ts = None if timestamps is None else torch.tensor(timestamps, dtype=torch.long)
    return Interactions(users, items, rating, ts)


def pairs(interactions: Interactions, item_ids: np.ndarray) -> list[tuple[int, str]]:
    return sorted(zip(interactions.user.tolist(),
                      item_ids[interactions.item.numpy()].tolist(), strict=True))


def make_data() -> CrossDomainData:
    # Domain A, k=2: the first round removes (2,i0) and (3,i2) (items with one row, user 3);
    # user 2 is then left with one row, so the second round removes (2,i3). Items i1, i3 remain.
    a_rows = [(0, 1), (0, 3), (1, 1), (1, 3), (2, 3), (2, 0), (3, 2)]
    a = Domain("A", np.array(["i0", "i1", "i2", "i3"], dtype=object),
               inter(a_rows, [1, 2, 3, 4, 5, 1, 2], list(range(7))), (1.0, 5.0),
               given_test=inter([(2, 3), (3, 2), (0, 1)], [5, 4, 1]))
    b = Domain("B", np.array([10, 11]), inter([(0, 0), (4, 1)]), None)
    return CrossDomainData(np.array([100, 101, 102, 103, 104]), {"A": a, "B": b}, name="toy")


def test_k_core_iterates_until_stable_and_reindexes_items():
    data = make_data()
    with pytest.warns(DataWarning, match="dropped 1 of 3 given_test rows"):
        core = k_core(data, 2, domains=["A"])
    a = core["A"]
    assert a.item_ids.tolist() == ["i1", "i3"]
    assert pairs(a.interactions, a.item_ids) == [(0, "i1"), (0, "i3"), (1, "i1"), (1, "i3")]
    assert a.interactions.item.tolist() == [0, 1, 0, 1]
    assert a.interactions.rating.tolist() == [1, 2, 3, 4]  # ratings follow their rows
    assert a.interactions.timestamp.tolist() == [0, 1, 2, 3]
    # given_test: (3, i2) left with its item; (2, i3) and (0, i1) are remapped, users kept
    assert pairs(a.given_test, a.item_ids) == [(0, "i1"), (2, "i3")]
    assert a.given_test.rating.tolist() == [5, 1]
    # users stay in the shared space; other domains untouched; input unchanged
    assert core.user_ids.tolist() == data.user_ids.tolist()
    assert core["B"] is data["B"]
    assert len(data["A"].interactions) == 7 and data["A"].n_items == 4


def test_k_core_all_domains_and_k1_drops_only_unused_items():
    data = make_data()
    b = data["B"]
    data = data.replace_domains({"B": Domain("B", np.array([10, 11, 12]), b.interactions)})
    core = k_core(data, 1)
    assert core["B"].item_ids.tolist() == [10, 11]  # item 12 had no rows
    assert len(core["B"].interactions) == 2


def test_k_core_matches_a_naive_reference():
    gen = torch.Generator().manual_seed(0)
    n = 400
    user = torch.randint(0, 40, (n,), generator=gen)
    item = torch.randint(0, 60, (n,), generator=gen)
    rows = sorted(set(zip(user.tolist(), item.tolist(), strict=True)))
    dom = Domain("D", np.arange(60) * 10, inter(rows))
    data = CrossDomainData(np.arange(40), {"D": dom})
    k = 3
    ref = set(rows)
    while True:  # plain Python k-core
        uc, ic = {}, {}
        for u, i in ref:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        nxt = {(u, i) for u, i in ref if uc[u] >= k and ic[i] >= k}
        if nxt == ref:
            break
        ref = nxt
    core = k_core(data, k)["D"]
    got = {(u, int(x) // 10) for u, x in pairs(core.interactions, core.item_ids)}
    assert got == ref and len(ref) > 0
    assert core.n_items == len({i for _, i in ref})


def test_k_core_errors():
    data = make_data()
    with pytest.raises(ValueError, match="positive integer"):
        k_core(data, 0)
    with pytest.raises(ValueError, match="empty"):
        k_core(data, 10, domains=["A"])
    with pytest.raises(KeyError, match="'C'"):
        k_core(data, 2, domains=["C"])


def test_binarize_threshold():
    data = make_data()
    out = binarize(data, threshold=4)
    a = out["A"]
    assert a.rating_scale is None and a.implicit
    assert pairs(a.interactions, a.item_ids) == [(1, "i3"), (2, "i3")]  # ratings 4 and 5
    assert a.interactions.rating.tolist() == [1.0, 1.0]
    assert a.interactions.timestamp.tolist() == [3, 4]
    assert a.item_ids.tolist() == ["i0", "i1", "i2", "i3"]  # item space unchanged
    assert pairs(a.given_test, a.item_ids) == [(2, "i3"), (3, "i2")]  # test ratings 5, 4
    assert out["B"] is data["B"]  # already implicit


def test_binarize_keeps_all_without_threshold():
    data = make_data()
    a = binarize(data)["A"]
    assert len(a.interactions) == 7 and a.rating_scale is None
    assert torch.all(a.interactions.rating == 1.0)
    assert len(a.given_test) == 3 and torch.all(a.given_test.rating == 1.0)
    assert data["A"].rating_scale == (1.0, 5.0)  # input unchanged


def test_binarize_threshold_that_empties_a_domain():
    with pytest.raises(ValueError, match="'A'"):
        binarize(make_data(), threshold=6)
