"""LightGCN: light graph convolution over the user-item graph (He, Deng, Wang, Li, Zhang, Wang,
"LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR 2020),
a base for implicit feedback trained with BPR, and its single-domain recommender.

The model, as the paper defines it (Sec. 3.1):

- light graph convolution (Eq. 3): e_u^(k+1) = sum_{i in N_u} 1 / (sqrt|N_u| sqrt|N_i|) e_i^(k),
  and the same for items; no self-connection, feature transform or nonlinearity. In matrix form
  (Eq. 6-7) E^(k+1) = (D^-1/2 A D^-1/2) E^(k), with A = [[0, R], [R^T, 0]] the adjacency of the
  bipartite graph of the training interactions R ((n_users + n_items) square) and D its degrees;
- layer combination (Eq. 4, Eq. 8 in matrix form): E = sum_k alpha_k E^(k), alpha_k = 1 / (K + 1),
  the mean of the layers 0..K;
- prediction (Eq. 5): y_hat_ui = e_u^T e_i on the combined embeddings;
- training (Eq. 15): the BPR loss (``cdrec.nn.losses.bpr_loss_terms``) over each positive and its
  sampled negatives, plus lambda ||E^(0)||^2 on the ego (layer-0) embeddings, the only
  parameters.

Defaults are those of the authors' PyTorch code (``gusye1234/LightGCN-PyTorch``, the paper's
settings): K = 3 layers, 64 dimensions, embeddings drawn from N(0, 0.1^2), Adam with lr 1e-3 on
batches of 2048 (user, positive, negative) triples, one negative per positive, at most 1000
epochs, and the L2 term as that code writes it, ``decay * 1/2 (||e_u^0||^2 + ||e_i^0||^2 +
||e_j^0||^2) / batch`` with decay 1e-4 (``penalty`` below is the half, so ``reg`` is their decay).

How it fits the bases:

- the graph. A base is built from sizes only (``new_base``, ``build_base``), but LightGCN's
  scores depend on the training interactions. ``set_graph(interactions)`` builds the normalised
  adjacency once, as a sparse CSR tensor (never a dense user x item matrix), and
  ``cdrec.models.bases.pretrain.fit_base`` calls it with the rows the base trains on (the
  interactions minus a held-out early-stopping slice, when there is one), before training. The
  adjacency is a non-persistent buffer: derived from the data, it stays out of state dicts,
  best-epoch snapshots and checkpoints (a resumed fit rebuilds it the same way), while a saved
  model file keeps it with the other derived buffers and ``load_model`` puts it back, so a loaded
  model scores without its training data. ``BaseCache`` keeps it with a cached base;
- propagation. Training propagates the whole graph once per batch (as the authors' code does),
  gradients flowing through the sparse products into the ego embeddings: ``training_loss``
  propagates once and the user states and scores of that batch all read the result. Where no
  gradient reaches the embeddings (scoring, validation, a frozen pretrained base under a
  transfer method), the propagated embeddings are cached and reused until the ego embeddings,
  the graph, the device or the mode (``train()``/``eval()``) change; a cached result never holds
  an autograd graph;
- the user state (what a transfer method maps) is the propagated user embedding e_u of Eq. 4,
  scored against the propagated item embeddings. ``reset_users`` zeroes the ego rows of users
  without data: with no edge, their combined embedding is that row / (K + 1), zero, so they score
  0 for every item, the prior;
- ``sparse: true`` is refused: every batch propagates the whole graph, so every embedding row
  gets a gradient at every step and row-wise sparse gradients do not apply.

Departures from the authors' code: triples are drawn per training interaction each epoch
(every positive once, with fresh negatives: the shared batching of the bases) where their sampler
draws users uniformly and then one of the user's positives; early stopping on validation (patience
20, cdrec's choice) replaces their fixed 1000 epochs with a test evaluation every 10; scores are
the inner product of Eq. 5 without the sigmoid their code puts on it (the same ranking).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field, model_validator

from cdrec.data.dataset import Interactions
from cdrec.models.bases.interface import BaseConfig, FactorBase, weighted_mean
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register
from cdrec.nn.losses import bpr_loss_terms


class LightGCNConfig(BaseConfig):
    """LightGCN's settings; defaults are the authors' code (module docstring)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 1000, "batch_size": 2048,
                                                   "lr": 1e-3, "patience": 20}

    dim: int = Field(64, ge=1, description="size of the ego (layer-0) embeddings")
    n_layers: int = Field(3, ge=0, description=(
        "K, the light graph convolutions (Eq. 3); 0 leaves the ego embeddings, plain BPR-MF"))
    reg: float = Field(1e-4, ge=0, description=(
        "lambda of Eq. 15: weight of 1/2 the squared ego embeddings of a batch's users, "
        "positives and negatives, per batch row (the authors' 'decay')"))
    n_neg: int = Field(1, ge=1, description="sampled negatives per positive")
    sparse: bool = Field(False, description=(
        "must stay false: every step propagates the whole graph, so every row gets a gradient"))

    @model_validator(mode="after")
    def _dense_gradients(self) -> LightGCNConfig:
        if self.sparse:
            raise ValueError(
                "sparse: true does not apply to LightGCN: every training step propagates the "
                "whole graph, so every embedding row gets a gradient and there are no "
                "untouched rows to skip; use sparse: false (the default)")
        return self


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int,
                         dtype: torch.dtype = torch.float32,
                         normalization: Literal["symmetric", "row"] = "symmetric") -> torch.Tensor:
    """D^-1/2 A D^-1/2 with A = [[0, R], [R^T, 0]] (Eq. 6-7) as a sparse CSR tensor of
    ``(n_users + n_items)`` square: users are nodes ``0..n_users-1``, item ``i`` is node
    ``n_users + i``. R is binary (a repeated pair is one edge); a node without edges (degree 0)
    has no entry, so its propagated rows are zero rather than NaN. ``normalization="row"`` gives
    D^-1 A instead (each row averages its neighbours: the mean aggregation of DisenCDR's VBGE);
    :func:`bipartite_blocks` cuts either into its two off-diagonal blocks."""
    users, items = users.long(), items.long()
    pairs = torch.unique(users * n_items + items)
    u, i = pairs // n_items, pairs % n_items + n_users
    rows, cols = torch.cat([u, i]), torch.cat([i, u])
    n = n_users + n_items
    degree = torch.bincount(rows, minlength=n).to(torch.float64)
    if normalization == "row":
        values = (1.0 / degree.clamp_min(1))[rows].to(dtype)
    elif normalization == "symmetric":
        inv_sqrt = torch.where(degree > 0, degree.clamp_min(1).rsqrt(), torch.zeros_like(degree))
        values = (inv_sqrt[rows] * inv_sqrt[cols]).to(dtype)
    else:
        raise ValueError(f"normalization must be 'symmetric' or 'row', got {normalization!r}")
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n),
                                  check_invariants=False).coalesce()
    with warnings.catch_warnings():  # CSR products are what this needs; the "beta" notice is not
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def bipartite_blocks(adjacency: torch.Tensor, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two off-diagonal blocks of a bipartite adjacency from :func:`normalized_adjacency`,
    as CSR tensors on its storage: the users' rows ``[n_users, n_items]`` (a product with item
    features gives user rows) and the items' rows ``[n_items, n_users]``, for propagations that
    weigh the two directions apart."""
    crow, col, values = (adjacency.crow_indices(), adjacency.col_indices(),
                         adjacency.values())
    n_items = adjacency.shape[0] - n_users
    split = crow[n_users]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        user_rows = torch.sparse_csr_tensor(crow[:n_users + 1], col[:split] - n_users,
                                            values[:split], (n_users, n_items),
                                            check_invariants=False)
        item_rows = torch.sparse_csr_tensor(crow[n_users:] - split, col[split:], values[split:],
                                            (n_items, n_users), check_invariants=False)
    return user_rows, item_rows


def light_propagation(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """E = 1/(K+1) sum_{k=0..K} E^(k) with E^(k+1) = adjacency E^(k) (Eq. 7-8): ``ego`` is
    E^(0) ``[n_users + n_items, dim]``; gradients flow through the sparse products into it."""
    layer, total = ego, ego
    for _ in range(n_layers):
        layer = torch.sparse.mm(adjacency, layer)  # Eq. 7
        total = total + layer
    return total / (n_layers + 1)  # Eq. 8, alpha_k = 1 / (K + 1)


def _outside_functorch() -> contextlib.AbstractContextManager[Any]:
    """Propagating a frozen base needs no transform (its result is a constant to ``torch.func``):
    run it outside any active one, where sparse products work and the result is a plain tensor
    that may be cached (TMCDR evaluates the target base's loss under ``vmap(grad(...))``)."""
    if torch._C._are_functorch_transforms_active():
        return torch._C._DisableFuncTorch()
    return contextlib.nullcontext()


@register_base("LightGCN")
class LightGCNBase(FactorBase):
    """LightGCN: scores e_u^T e_i (Eq. 5) of embeddings propagated over the training graph
    (Eq. 7-8), trained with BPR plus L2 on the ego embeddings (Eq. 15). Needs ``set_graph``
    before it scores (``fit_base`` calls it)."""

    Config = LightGCNConfig
    config: LightGCNConfig
    implicit_only = True
    adjacency: torch.Tensor | None  # non-persistent buffer, set by ``set_graph``

    def __init__(self, n_users: int, n_items: int, config: LightGCNConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std)
        self.register_buffer("adjacency", None, persistent=False)
        # The propagated embeddings of the batch being trained on (``training_loss``), and the
        # cache of those computed without gradients: (adjacency, key, (users, items)).
        self._pinned: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: tuple[torch.Tensor, tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    # -- the graph and its propagation ---------------------------------------------------------

    def set_graph(self, interactions: Interactions) -> None:
        """Build the normalised adjacency (Eq. 6-7) from the interactions the base trains on:
        the pretraining path (``fit_base``) calls it before training."""
        users, items = interactions.user, interactions.item
        if users.numel() and (int(users.min()) < 0 or int(users.max()) >= self.n_users
                              or int(items.min()) < 0 or int(items.max()) >= self.n_items):
            raise ValueError(f"interactions outside the base's {self.n_users} users x "
                             f"{self.n_items} items")
        weight = self.user_factors.weight
        adjacency = normalized_adjacency(users, items, self.n_users, self.n_items, weight.dtype)
        self.adjacency = adjacency.to(weight.device)
        self._cache = None

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The combined embeddings (Eq. 4 / 8) of all users ``[n_users, dim]`` and all items
        ``[n_items, dim]``, computed now, with gradients to the ego embeddings where enabled."""
        if self.adjacency is None:
            raise RuntimeError(
                "LightGCN has no graph: call set_graph(interactions) with its training "
                "interactions first (fit_base and pretrain_base do)")
        ego = torch.cat([self.user_factors.weight, self.item_factors.weight])
        out = light_propagation(self.adjacency, ego, self.config.n_layers)
        users, items = out.split([self.n_users, self.n_items])
        return users, items

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The propagated embeddings scoring reads: the batch's own during ``training_loss``;
        else, when gradients reach the ego embeddings, a fresh propagation (a cached autograd
        graph would be freed by the first backward); else the cache, recomputed whenever the
        ego embeddings (an optimiser step, loading a state, ``reset_users``), the graph, the
        device or dtype, or inference mode differ from when it was made."""
        if self._pinned is not None:
            return self._pinned
        user_w, item_w = self.user_factors.weight, self.item_factors.weight
        if torch.is_grad_enabled() and (user_w.requires_grad or item_w.requires_grad):
            return self.propagate()
        key = (user_w._version, item_w._version, user_w.data_ptr(), item_w.data_ptr(),
               torch.is_inference_mode_enabled())
        cache = self._cache
        if cache is not None and cache[0] is self.adjacency and cache[1] == key:
            return cache[2]
        with _outside_functorch():
            out = self.propagate()
        assert self.adjacency is not None  # propagate checked it
        self._cache = (self.adjacency, key, out)
        return out

    def clear_cache(self) -> None:
        """Drop the cached propagated embeddings (recomputed when next needed)."""
        self._cache = None

    def train(self, mode: bool = True) -> Self:
        # Any change of mode (training resumes, or ends) drops the cache: what a step changes
        # in place is then never read back stale, whatever the optimiser.
        self.clear_cache()
        return super().train(mode)

    # -- the base interface --------------------------------------------------------------------

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        """e_u of Eq. 4, the propagated user embedding."""
        return self.final_embeddings()[0][users]

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """y_hat = e_u^T e_i (Eq. 5) against the propagated item embeddings."""
        return (state * self.final_embeddings()[1][items]).sum(-1)

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return state @ self.final_embeddings()[1][items].T

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """e_i of Eq. 4, the propagated item embeddings (what PTUPCDR and SSCDR read)."""
        return self.final_embeddings()[1][items]

    def loss_with(self, state: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        """The BPR term of Eq. 15: -ln sigma(y_hat_ui - y_hat_uj), averaged over the negatives
        of each positive, then over the batch."""
        pos = self.score_with(state, items)
        neg = self.score_with(state.unsqueeze(-2), target)
        return weighted_mean(bpr_loss_terms(pos, neg).mean(-1), weight)

    def penalty(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        """1/2 ||E^(0)||^2 of the batch's ego rows (users, positives, negatives scaled by
        1/sqrt(n_neg)) per batch row: Eq. 15's regulariser as the authors' code computes it."""
        return 0.5 * super().penalty(users, items, target)

    def training_loss(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                      ) -> torch.Tensor:
        """Eq. 15 on a batch, propagating the graph once: the user states and every score of the
        batch read the same propagated embeddings."""
        self._pinned = self.final_embeddings()
        try:
            return super().training_loss(users, items, target)
        finally:
            self._pinned = None


@register("LightGCN")
class LightGCN(SingleDomain):
    """LightGCN on each domain separately (implicit feedback), over that domain's training
    graph."""

    base_name = "LightGCN"
