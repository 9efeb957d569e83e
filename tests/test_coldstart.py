"""The cold-start scenario: what the model sees, what is held out, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.schema import DataError
from cdrec.models import build_model
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.split import TrainView
from cdrec.train import FitContext


def test_test_and_validation_users_target_ratings_are_absent_from_training(douban_sample):
    scenario = ColdStartUsers("book", "music", test_fraction=0.2, validation_fraction=0.1)
    split = scenario.split(douban_sample, seed=3)
    test_users = split.test.users
    val_users = split.validation.users
    assert not bool(torch.isin(test_users, val_users).any())

    train_music = split.train.data["music"].interactions
    assert not bool(torch.isin(train_music.user, test_users).any())
    assert not bool(torch.isin(train_music.user, val_users).any())
    for dom in split.train.data.domains.values():
        assert dom.given_test is None
    # Nothing of the held-out target rows survives in the train view, compared as (user, item).
    held = split.test.interactions
    n = douban_sample["music"].n_items
    train_keys = set((train_music.user * n + train_music.item).tolist())
    assert not train_keys & set((held.user * n + held.item).tolist())
    # ... and the held-out table is all of the test users' music ratings, nothing else.
    full = douban_sample["music"].interactions
    assert len(held) == int(torch.isin(full.user, test_users).sum())
    # Their source ratings stay: that is what transfer uses.
    book = split.train.data["book"].interactions
    assert bool(torch.isin(test_users, book.user).all())
    assert len(book) == len(douban_sample["book"].interactions)

    overlap = douban_sample.overlap_users("book", "music").numel()
    assert split.info["test_users"] == round(0.2 * overlap) == test_users.numel()
    assert split.info["validation_users"] == round(0.1 * overlap) == val_users.numel()


def test_split_depends_on_seed_only(douban_sample):
    scenario = ColdStartUsers("book", "music")
    a = scenario.split(douban_sample, 0).test.users
    b = scenario.split(douban_sample, 0).test.users
    c = scenario.split(douban_sample, 1).test.users
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_implicit_candidates_hold_all_positives_and_unobserved_negatives(douban_sample):
    split = ColdStartUsers("book", "music", implicit=True, n_neg=4).split(douban_sample, 0)
    ev = split.test
    full = douban_sample["music"].interactions
    n_items = douban_sample["music"].n_items
    observed = set((full.user * n_items + full.item).tolist())
    users = ev.users.unsqueeze(1).expand_as(ev.candidates)
    keys = (users * n_items + ev.candidates)[ev.mask]
    labels = ev.labels[ev.mask]
    is_observed = torch.tensor([k in observed for k in keys.tolist()])
    assert torch.equal(is_observed, labels.bool())  # positives observed, negatives never
    per_user_pos = (ev.labels.bool() & ev.mask).sum(1)
    per_user_neg = (~ev.labels.bool() & ev.mask).sum(1)
    assert torch.equal(per_user_neg, 4 * per_user_pos)
    expected = torch.bincount(full.user[torch.isin(full.user, ev.users)],
                              minlength=douban_sample.n_users)[ev.users]
    assert torch.equal(per_user_pos, expected)
    # Positives are not all at the front: candidates are shuffled within each row.
    assert ev.labels[:, 0].float().mean() < 0.5


def test_no_overlap_users_is_a_clear_error():
    def domain(name: str, users: list[int]) -> Domain:
        u = torch.tensor(users)
        return Domain(name, np.arange(3), Interactions(u, u % 3, torch.full((len(users),), 4.0)),
                      rating_scale=(1.0, 5.0))

    data = CrossDomainData(np.arange(6), {"a": domain("a", [0, 1, 2]), "b": domain("b", [3, 4, 5])})
    with pytest.raises(DataError, match="no overlap users between 'a' and 'b'"):
        ColdStartUsers("a", "b").split(data, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"test_fraction": 0.0}, "test_fraction must be in"),
    ({"test_fraction": 1.2}, "test_fraction must be in"),
    ({"test_fraction": 0.6, "validation_fraction": 0.5}, "must leave overlap users"),
    ({"n_neg": 0}, "n_neg must be >= 1"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColdStartUsers("book", "music", **kwargs)


def test_unknown_domain_names_the_available_ones(douban_sample):
    with pytest.raises(KeyError, match="movie"):
        ColdStartUsers("movie", "music").split(douban_sample, 0)


def test_a_view_without_source_and_target_is_refused_by_transfer_methods(douban_sample):
    assert TrainView(douban_sample, "coldstart", "book", "music").transfer_domains() == (
        "book", "music")
    for view in (TrainView(douban_sample, "coldstart"),
                 TrainView(douban_sample, "coldstart", source="book")):
        with pytest.raises(ValueError, match="scenario 'coldstart' gives no source and target"):
            view.transfer_domains()
        with pytest.raises(ValueError, match="scenario 'coldstart' gives no source and target"):
            build_model("EMCDR").fit(view, context=FitContext(progress=False))
