"""Saving, loading and serving a fitted model: the file's checks, top-k lists by original id,
and new (cold-start) users recommended from their source history.

The round trip of every registered model is in ``test_contract.py``; here are the errors a file
can give, what ``recommend`` returns, and the maths of a new user's state (``fold_in``).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cdrec.data.catalog import load_sample
from cdrec.models import build_model
from cdrec.models.bases.mf import MFBase, MFConfig
from cdrec.models.model_file import FORMAT_VERSION
from cdrec.models.persist import load_model
from cdrec.models.serving import NewHistory, UnknownIdsWarning, fold_in
from cdrec.scenarios import build_scenario
from cdrec.split import Split
from cdrec.train import FitContext, seed_everything


@functools.cache
def split() -> Split:
    data = load_sample("douban")
    return build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)


@functools.cache
def fitted(name: str) -> object:
    seed_everything(0)
    sp = split()
    return build_model(name).fit(sp.train, sp.validation, FitContext(seed=0, progress=False))


@pytest.fixture(scope="module")
def emcdr_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fitted("EMCDR").save(tmp_path_factory.mktemp("model") / "emcdr.pt")


def test_a_file_of_another_model_is_refused(emcdr_file: Path) -> None:
    with pytest.raises(ValueError, match="holds a EMCDR model, not a TMCDR"):
        load_model(emcdr_file, model="TMCDR")
    assert type(load_model(emcdr_file, model="EMCDR")).__name__ == "EMCDR"


def test_a_file_of_another_format_version_names_both(emcdr_file: Path, tmp_path: Path) -> None:
    payload = torch.load(emcdr_file, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=f"format {FORMAT_VERSION + 1}; this cdrec .* reads "
                                         f"format {FORMAT_VERSION}"):
        load_model(tmp_path / "future.pt")


def test_files_that_are_not_model_files_are_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a cdrec model file"):
        load_model(tmp_path / "plain.pt")
    # An arbitrary pickled object is never unpickled (weights_only=True).
    torch.save({"format": "cdrec.model", "payload": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_model(tmp_path / "pickled.pt")
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "absent.pt")


def test_a_state_that_does_not_fit_is_refused(emcdr_file: Path, tmp_path: Path) -> None:
    payload = torch.load(emcdr_file, weights_only=True)
    payload["state"].pop(next(iter(payload["state"])))
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="state does not fit"):
        load_model(tmp_path / "cut.pt")


def test_an_unfitted_model_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        build_model("EMCDR").save(tmp_path / "x.pt")


def test_loading_leaves_the_global_random_state_alone(emcdr_file: Path) -> None:
    before = torch.get_rng_state()
    load_model(emcdr_file)
    assert torch.equal(torch.get_rng_state(), before)


def test_recommend_ranks_unseen_items_by_predicted_score() -> None:
    model = fitted("EMCDR")
    data = split().train.data
    music = data["music"]
    warm = int(music.interactions.user[0])
    user_id = data.user_ids[warm]
    recs = model.recommend("music", [str(user_id)], k=10)  # a text id finds an integer id
    assert list(recs.columns) == ["user", "rank", "item", "score"]
    assert list(recs["rank"]) == list(range(1, 11)) and (recs["user"] == user_id).all()
    assert recs["score"].is_monotonic_decreasing
    seen = set(music.item_ids[music.interactions.item[music.interactions.user == warm].numpy()])
    assert seen and not seen & set(recs["item"])
    # The scores are the model's predictions for those (user, item) pairs, and nothing unseen
    # scores higher than the tenth.
    index = pd.Index(music.item_ids).get_indexer(recs["item"])
    pred = model.predict("music", torch.full((len(index),), warm), torch.from_numpy(index))
    assert torch.allclose(pred, torch.tensor(recs["score"].to_numpy()))
    every = model.predict("music", torch.full((music.n_items,), warm), torch.arange(music.n_items))
    unseen = ~torch.from_numpy(np.isin(music.item_ids, list(seen)))
    assert float(every[unseen].sort(descending=True).values[9]) == pytest.approx(
        float(recs["score"].iloc[-1]))
    kept = model.recommend("music", [user_id], k=music.n_items, exclude_seen=False)
    assert len(kept) == music.n_items and seen <= set(kept["item"])


def test_recommend_names_unknown_users() -> None:
    with pytest.raises(KeyError, match="'no-such-user'"):
        fitted("EMCDR").recommend("music", ["no-such-user"])


def cold_history(n_users: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The source histories of cold-start test users, as a new user's file would give them."""
    model = fitted("EMCDR")
    data = split().train.data
    cold = (~model.has_target_).nonzero().squeeze(1)
    book = data["book"].interactions
    users = torch.unique(book.user[torch.isin(book.user, cold)])[:n_users]
    rows = book.select(torch.isin(book.user, users))
    frame = pd.DataFrame({"user": data.user_ids[rows.user.numpy()],
                          "item": data["book"].item_ids[rows.item.numpy()],
                          "rating": rows.rating.numpy()})
    return frame, data.user_ids[users.numpy()]


def test_a_new_users_history_gives_the_cold_start_users_list() -> None:
    """A new user with exactly a cold-start user's source history is that user to the model:
    the folded-in source state replaces the trained one, so the lists nearly agree (measured:
    0.925 of the top 20 in common on average for EMCDR)."""
    model = fitted("EMCDR")
    history, users = cold_history(30)
    new = model.recommend_from_history(history, k=20)
    known = model.recommend("music", users, k=20, exclude_seen=False)
    common = [len(set(new[new.user == u].item) & set(known[known.user == u].item)) / 20
              for u in users]
    assert float(np.mean(common)) >= 0.8
    assert set(new["user"]) == set(users)


def test_unknown_history_items_are_reported() -> None:
    model = fitted("EMCDR")
    history, _ = cold_history(1)
    one = dict(zip(history["item"], history["rating"], strict=True))
    with pytest.warns(UnknownIdsWarning, match=r"1 of .* not items of the source domain "
                                               r"'book': 'no-such-book'"):
        with_unknown = model.recommend_from_history({**one, "no-such-book": 5.0}, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert with_unknown.equals(model.recommend_from_history(one, k=5))
    with pytest.raises(KeyError, match="not items of the source domain"):
        model.recommend_from_history({**one, "no-such-book": 5.0}, unknown="error")
    with pytest.raises(KeyError, match="no known item is left"):
        model.recommend_from_history({"no-such-book": 5.0})


def test_a_model_that_cannot_map_a_new_user_says_so() -> None:
    history, _ = cold_history(1)
    with pytest.raises(ValueError, match="CMF cannot recommend for a new user"):
        fitted("CMF").recommend_from_history(history)


def test_fold_in_recovers_the_state_that_generated_the_ratings() -> None:
    """Ratings made exactly by a known state over fixed items: the folded-in state is that
    state (no regularisation), for several users at once."""
    gen = torch.Generator().manual_seed(0)
    base = MFBase(3, 40, MFConfig(dim=4, reg=0.0), implicit=False, global_mean=3.0,
                  generator=gen)
    with torch.no_grad():
        base.item_bias.copy_(torch.randn(40, generator=gen) * 0.3)
    truth = torch.randn(2, 5, generator=gen) * 0.5  # [p_u, b_u]
    slot = torch.arange(2).repeat_interleave(30)
    items = torch.cat([torch.randperm(40, generator=gen)[:30] for _ in range(2)])
    ratings = base.score_with(truth[slot], items).detach()
    state = fold_in(base, NewHistory(slot, items, ratings, 2), steps=800)
    assert torch.allclose(state, truth, atol=1e-3)


def test_a_new_users_timestamps_choose_their_most_recent_items() -> None:
    """PTUPCDR keeps a user's last ``max_history`` items: by timestamp when the history has
    one, else by row order. With one item kept, a history listed newest first but stamped gives
    the list of the same history in time order without stamps."""
    seed_everything(0)
    sp = split()
    model = build_model("PTUPCDR", max_history=1, epochs=2,
                        base_config={"epochs": 2}).fit(sp.train, sp.validation,
                                                       FitContext(seed=0, progress=False))
    history, _ = cold_history(1)
    history = history.drop(columns="user").head(6)
    in_order = model.recommend_from_history(history, k=5)
    newest_first = history.iloc[::-1].assign(timestamp=range(6, 0, -1))
    stamped = model.recommend_from_history(newest_first, k=5)
    # The fold-in sums the rows in another order: scores agree to float rounding.
    assert list(stamped["item"]) == list(in_order["item"])
    assert np.allclose(stamped["score"], in_order["score"], atol=1e-5)
    unstamped = model.recommend_from_history(history.iloc[::-1], k=5)
    assert not np.allclose(unstamped["score"], in_order["score"], atol=1e-5)


def test_a_history_value_that_is_not_a_number_names_its_row() -> None:
    history = pd.DataFrame({"item": [2874, 4528, 1047], "rating": ["5", "four", "3"]})
    with pytest.raises(ValueError, match="history row 2: rating 'four' is not a number"):
        fitted("EMCDR").recommend_from_history(history)
