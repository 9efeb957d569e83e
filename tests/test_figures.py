"""MetaEM's Fig. 2 for any transfer method: the embeddings it plots, and the PNG."""

from __future__ import annotations

from pathlib import Path

import torch

from cdrec.data.catalog import load_sample
from cdrec.figures import plot_transfer_tsne, transfer_embeddings
from cdrec.models import build_model
from cdrec.models.serving import NewHistory, fold_in
from cdrec.scenarios import build_scenario
from cdrec.train import FitContext, seed_everything


def test_tsne_of_true_and_transformed_target_embeddings(tmp_path: Path) -> None:
    data = load_sample("douban")
    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    seed_everything(0)
    model = build_model("EMCDR", base_config={"epochs": 5}, epochs=5).fit(
        split.train, split.validation, FitContext(seed=0, progress=False))
    groups = transfer_embeddings(model, split, data, n_users=40)
    assert {k: tuple(v.shape) for k, v in groups.items()} == {
        k: (40, model.target_.user_dim) for k in ("train_true", "train_mapped", "test_true",
                                                  "test_mapped")}
    # A test user's true embedding comes from their held-out target ratings: it is not the
    # prior (zero) the trained model has for them, and it differs from the transformed one.
    assert groups["test_true"].abs().sum(1).min() > 0
    assert not torch.allclose(groups["test_true"], groups["test_mapped"])
    # Training users' true embeddings are the target model's own rows.
    overlap_states = model.target_.user_state(split.train.data.overlap_users("book", "music"))
    assert bool((groups["train_true"].unsqueeze(1) == overlap_states.unsqueeze(0))
                .all(-1).any(1).all())
    coords = plot_transfer_tsne(groups, tmp_path / "tsne.png", "EMCDR")
    assert coords.shape == (160, 2) and (tmp_path / "tsne.png").stat().st_size > 10_000


def test_fold_in_of_a_training_user_lands_near_their_learned_embedding() -> None:
    """Why the test users' true embeddings are comparable: folding a training user's own target
    ratings into the frozen target base gives a state close to the learned one."""
    data = load_sample("douban")
    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(data, 0)
    seed_everything(0)
    model = build_model("EMCDR", epochs=2).fit(split.train, split.validation,
                                               FitContext(seed=0, progress=False))
    music = split.train.data["music"].interactions
    users = torch.unique(music.user)[:30]
    rows = music.select(torch.isin(music.user, users))
    folded = fold_in(model.target_, NewHistory(torch.searchsorted(users, rows.user), rows.item,
                                               rows.rating, users.numel()))
    learned = model.target_.user_state(users)
    cosine = torch.nn.functional.cosine_similarity(folded, learned).mean()
    assert float(cosine) > 0.8
