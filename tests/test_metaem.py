"""MetaEM (centralised): the shapes that make its per-device traffic O(k_c k_p + k_p n), Eq. 2-7
against a hand computation, the batched forms, and where the mapping stage's gradient goes."""

from __future__ import annotations

import pytest
import torch

from cdrec.models import available_models, build_model
from cdrec.models.coldstart.metaem import MetaEM, MetaEmbeddingBase, MetaEmbeddingConfig


def tiny_base(**settings: object) -> MetaEmbeddingBase:
    torch.manual_seed(0)
    config = MetaEmbeddingConfig(dim=4, common_dim=2, private_dim=3, hidden=5,
                                 **settings)  # type: ignore[arg-type]
    return MetaEmbeddingBase(6, 7, config, implicit=False,
                             generator=torch.Generator().manual_seed(0), init_std=0.5)


def test_the_tables_a_device_downloads_are_n_by_kp_and_kp_by_kc() -> None:
    base = MetaEmbeddingBase(10, 1000, MetaEmbeddingConfig(), implicit=False)
    assert base.item_factors.weight.shape == (1000, 8)               # V^c: n x k_p
    private = base.private_items(base.user_state(torch.tensor([0, 1])))
    assert private.shape == (2, 8, 32)                               # V^p_u: k_p x k_c
    download = base.item_factors.weight.numel() + private[0].numel()
    assert download == 8 * 1000 + 8 * 32                             # not k * n = 32 000


def test_a_score_is_eq_2_to_7_by_hand() -> None:
    base = tiny_base()
    user, item = 2, 5
    with torch.no_grad():
        u_hat = base.user_mlp(base.user_factors.weight[user])                 # Eq. 5
        private = base.meta(u_hat).view(2, 3)                                 # Eq. 3-4
        v_u = base.item_factors.weight @ private                              # Eq. 2: [n, k_c]
        expected = float(u_hat @ base.item_mlp(v_u[item]))                    # Eq. 6-7
        got = float(base(torch.tensor([user]), torch.tensor([item])))
    assert got == pytest.approx(expected, rel=1e-5)


def test_the_batched_forms_agree_with_one_pair_at_a_time() -> None:
    base = tiny_base()
    users = torch.tensor([0, 3, 3])
    items = torch.tensor([[1, 2, 6], [0, 0, 4], [5, 1, 2]])
    with torch.no_grad():
        state = base.user_state(users)
        block = base.score_with(state.unsqueeze(1), items)                   # [B, 1, D], [B, n]
        pairs = torch.stack([base.score_with(state[b].expand(3, -1), items[b])
                             for b in range(3)])
        every = base.score_items(state, torch.arange(7))                     # [B, n_items]
    assert torch.allclose(block, pairs, atol=1e-6)
    assert torch.allclose(every[torch.arange(3).unsqueeze(1), items], block, atol=1e-6)


def test_outputs_are_non_negative_as_eq_5_and_6_write_them() -> None:
    base = tiny_base()
    with torch.no_grad():
        assert bool((base.user_state(torch.arange(6)) >= 0).all())
        assert bool((base(torch.arange(6), torch.arange(6)) >= 0).all())
    assert bool((tiny_base(output_relu=False).user_state(torch.arange(6)) < 0).any())


def test_the_task_loss_reaches_f_through_the_regenerated_private_items() -> None:
    """Eq. 13: the mapped embedding enters twice, as u_hat^t and through V^p = g^t(u_hat^t);
    the gradient at the mapped state must include the second path."""
    base = tiny_base()
    for p in base.parameters():
        p.requires_grad_(False)
    state = torch.rand(3, 4, requires_grad=True)
    items, ratings = torch.tensor([1, 4, 6]), torch.tensor([4.0, 2.0, 5.0])
    (full,) = torch.autograd.grad(base.loss_with(state, items, ratings), state)

    def without_regeneration(s: torch.Tensor) -> torch.Tensor:
        private = base.private_items(s.detach())                 # V^p held fixed
        item = (base.item_factors(items).unsqueeze(-2) @ private).squeeze(-2)
        return ((s * base.item_mlp(item)).sum(-1) - ratings).pow(2).mean()

    (partial,) = torch.autograd.grad(without_regeneration(state), state)
    assert full.abs().sum() > 0 and not torch.allclose(full, partial)


def test_registered_with_the_paper_defaults_and_no_variants_over_its_base() -> None:
    model = build_model("MetaEM")
    assert isinstance(model, MetaEM)
    assert (model.config.batch_size, model.config.weight_decay, model.config.objective) == (
        256, 1e-4, "task")
    base = model.config.base_settings()
    assert (base.dim, base.common_dim, base.k_c, base.hidden) == (32, 8, 32, 128)
    assert not any(name.endswith("_MetaEmbedding") for name in available_models())
    with pytest.raises(ValueError, match="sparse must be false"):
        MetaEmbeddingBase(2, 2, MetaEmbeddingConfig(sparse=True), implicit=False)


@pytest.mark.parametrize("scorer", ["mf", "gmf"])
def test_the_mf_and_gmf_prediction_modules_by_hand(scorer: str) -> None:
    """Fig. 3's bases: r = u . V_u[j] (MF) and h . (u * V_u[j]) (GMF), V_u = V^c g(u)."""
    torch.manual_seed(0)
    base = MetaEmbeddingBase(5, 6, MetaEmbeddingConfig(dim=3, common_dim=2, hidden=4,
                                                       scorer=scorer), implicit=False)
    if scorer == "gmf":
        with torch.no_grad():
            base.item_mlp.h.copy_(torch.tensor([0.5, -1.0, 2.0]))
    with torch.no_grad():
        u = base.user_factors.weight[1]                       # the state is u itself
        v_u = base.item_factors.weight @ base.meta(u).view(2, 3)
        h = base.item_mlp.h if scorer == "gmf" else torch.ones(3)
        expected = float((h * u * v_u[4]).sum())
        got = float(base(torch.tensor([1]), torch.tensor([4])))
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="private_dim"):
        MetaEmbeddingBase(2, 2, MetaEmbeddingConfig(dim=3, private_dim=4, scorer=scorer),
                          implicit=False)


def test_the_generalisation_variants_keep_their_scorer_under_user_settings() -> None:
    for name, scorer in (("MetaEM_MF", "mf"), ("MetaEM_GMF", "gmf"), ("MetaEM_DNN", "towers")):
        model = build_model(name, base_config={"lr": 0.01})
        assert model.config.base_config["scorer"] == scorer  # merged, not replaced
        assert model.config.base_config["lr"] == 0.01


def test_scoring_every_item_in_chunks_gives_the_same_scores(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from cdrec.models.coldstart import metaem

    base = tiny_base()
    with torch.no_grad():
        state = base.user_state(torch.arange(3))
        whole = base.score_items(state, torch.arange(7))
        monkeypatch.setattr(metaem, "SCORE_PAIRS", 4)  # one item per chunk for three users
        chunked = base.score_items(state, torch.arange(7))
    assert torch.allclose(whole, chunked, atol=1e-6)
