"""PTUPCDR: personalized transfer of user preferences (Zhu et al., WSDM 2022).

EMCDR learns one bridge from source to target user states for everybody; PTUPCDR generates a
bridge per user from what that user did in the source domain.

The paper's text is not among ``shared/papers``: the steps below follow its public description
(and MetaEM's account of it, MetaEM Sec. 2 and 4.3), so they are named, not numbered.

1. Pretraining (shared with EMCDR, TMCDR, ...): a base per domain; both stay frozen afterwards.
2. Characteristic encoder: the user's source history S_u, embedded with the
   pretrained source base's item embeddings e_j, is attention-pooled:

       a'_j = h([e_j, r_j - mu_s])     h: Linear(d+1, d) - ReLU - Linear(d, 1)
       a_j  = exp(a'_j) / sum_{l in S_u} exp(a'_l)       (padding gets exactly 0)
       c_u  = sum_{j in S_u} a_j e_j

   The paper's h sees the item embedding alone and its public code keeps only liked items
   (source rating > 3) in S_u. cdrec keeps every rated item by default and gives h the centred
   rating as one extra input (``rating_feature``), so a disliked item can be weighted differently
   from a liked one; ``min_rating=3, rating_feature=false`` is the published form. On implicit
   feedback h sees e_j alone (every rating is 1).
3. Meta network: w_u = g(c_u), g: Linear(d, meta_dim) - ReLU - Linear(meta_dim,
   d_in * d_out), reshaped to the personal bridge W_u in R^{d_in x d_out}.
4. Personal bridge: u^t_u = u^s_u W_u, a linear map without offset as in the paper.
   The user state of the default biased MF base is [p_u, b_u], so the bridge maps the full state:
   the transferred bias is a personal linear combination of the source factors and bias (a cold
   user's target bias is otherwise unknown). ``base_config.use_bias=false`` gives the paper's
   plain p_u -> p_u bridge.
5. Task-oriented optimisation: h and g are trained with the target base's own loss on
   the training overlap users' target interactions, the bridged state standing in for the
   learned one (squared error on ratings; the base's implicit loss with sampled negatives),
   not with a distance to the pretrained target state. The pretrained bases stay frozen.

Early stopping uses the cold-start validation users (the public code runs a fixed 10 epochs).
Histories are built once as padded ``[n_users, max_history]`` tensors (the last ``max_history``
interactions, by timestamp when present, else by row order), with no loop over users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys
from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.interface import EmbeddingBase, FactorBase
from cdrec.models.coldstart.transfer import TransferConfig, TransferMethod
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.models.serving import NewHistory
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.nn import MLP
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class PTUPCDRConfig(TransferConfig, TrainingConfig):
    """Defaults: meta_dim 50, lr 0.01 and weight_decay 0 follow the authors' public code;
    batch size 256 is MetaEM's setting for all its baselines (MetaEM Sec. 4.2). The public code
    trains a fixed 10 epochs; cdrec early-stops on validation users instead (``epochs`` and
    ``patience`` are cdrec's), and ``max_history`` 50 and the rating feature are cdrec's
    choices (the public code keeps each user's last 20 liked items). ``weight_decay`` is L2 on
    the encoder and meta network (Adam); the public code uses 0. Without it the meta network
    memorises the training users (on Douban it overfits from the first epoch); 0.03-0.3 brings
    it to EMCDR's level there."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 256, "lr": 0.01, "patience": 10}

    meta_dim: int = Field(50, ge=1, description="hidden size of the meta network g")
    attention_hidden: int | None = Field(None, ge=1, description=(
        "hidden size of the attention network h; default: the item embedding size"))
    max_history: int = Field(50, ge=1, description=(
        "source interactions per user kept for the characteristic encoder (the most recent)"))
    min_rating: float | None = Field(None, description=(
        "keep only source items rated above this (the public code uses 3: liked items only)"))
    rating_feature: bool = Field(True, description=(
        "give the attention network the centred source rating of each item (explicit data)"))


def padded_histories(interactions: Interactions, n_users: int, max_len: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each user's last ``max_len`` interactions as ``(items, ratings, mask)``, each
    ``[n_users, max_len]``, oldest first and left-aligned, padding (item 0, rating 0, mask
    False) on the right.

    "Last" is by timestamp where the table has one (ties keep row order), else by row order.
    One stable sort on a (user, time rank) key; no loop over users.
    """
    user = interactions.user
    if interactions.timestamp is None:
        key = user
    else:  # dense rank of times, so the combined key cannot overflow
        _, t_rank = torch.unique(interactions.timestamp, return_inverse=True)
        key = user * len(interactions) + t_rank
    order = torch.sort(key, stable=True).indices
    u, item, rating = user[order], interactions.item[order], interactions.rating[order]
    counts = torch.bincount(u, minlength=n_users)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(u.numel()) - start[u]            # 0 = oldest of the user's rows
    skip = (counts - max_len).clamp_min(0)               # older rows beyond the budget
    keep = pos >= skip[u]
    slot = (pos - skip[u])[keep]
    u = u[keep]
    items = torch.zeros(n_users, max_len, dtype=torch.long)
    ratings = torch.zeros(n_users, max_len, dtype=torch.float32)
    mask = torch.zeros(n_users, max_len, dtype=torch.bool)
    items[u, slot] = item[keep]
    ratings[u, slot] = rating[keep].float()
    mask[u, slot] = True
    return items, ratings, mask


def source_item_vectors(base: EmbeddingBase, items: torch.Tensor) -> torch.Tensor:
    """The pretrained item embeddings e_j of a base (``item_factors`` for MF/BPR, the propagated
    ones for LightGCN)."""
    if not isinstance(base, FactorBase):
        raise TypeError(f"PTUPCDR needs the source base's item embeddings; {type(base).__name__} "
                        "has no item_factors table")
    return base.item_vectors(items)


class CharacteristicEncoder(nn.Module):
    """Attention pooling of a user's source history into c_u (module docstring, step 2)."""

    def __init__(self, dim: int, hidden: int, rating_feature: bool) -> None:
        super().__init__()
        self.rating_feature = rating_feature
        self.h = MLP([dim + int(rating_feature), hidden, 1], activation=nn.ReLU)

    def attention(self, emb: torch.Tensor, mask: torch.Tensor,
                  rating: torch.Tensor | None = None) -> torch.Tensor:
        """a_j over each row's unpadded entries, ``[B, L]``; padding gets exactly 0 and a row
        without history gets all zeros."""
        if not self.rating_feature:
            x = emb
        elif rating is None:
            raise ValueError("this encoder was built with rating_feature=True: pass the ratings")
        else:
            x = torch.cat([emb, rating.unsqueeze(-1)], -1)
        logits = self.h(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        top = logits.detach().amax(-1, keepdim=True).clamp_min(-1e30)  # finite if empty
        expo = torch.exp(logits - top)                          # exp(-inf) = 0 on padding
        return expo / expo.sum(-1, keepdim=True).clamp_min(1e-30)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor,
                rating: torch.Tensor | None = None) -> torch.Tensor:
        """c_u = sum_j a_j e_j, ``[B, d]``."""
        return (self.attention(emb, mask, rating).unsqueeze(-1) * emb).sum(-2)


class PersonalizedBridge(nn.Module):
    """Characteristic encoder + meta network g -> per-user bridge W_u (steps 2-4)."""

    def __init__(self, item_dim: int, dim_in: int, dim_out: int, meta_dim: int,
                 attention_hidden: int, rating_feature: bool) -> None:
        super().__init__()
        self.dim_in, self.dim_out = dim_in, dim_out
        self.encoder = CharacteristicEncoder(item_dim, attention_hidden, rating_feature)
        self.meta = MLP([item_dim, meta_dim, dim_in * dim_out], activation=nn.ReLU)

    def bridge(self, emb: torch.Tensor, mask: torch.Tensor,
               rating: torch.Tensor | None = None) -> torch.Tensor:
        """W_u = reshape(g(c_u)), ``[B, dim_in, dim_out]``."""
        return self.meta(self.encoder(emb, mask, rating)).view(-1, self.dim_in, self.dim_out)

    def forward(self, state: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor,
                rating: torch.Tensor | None = None) -> torch.Tensor:
        """u^t = u^s W_u, ``[B, dim_out]``."""
        return torch.bmm(state.unsqueeze(1), self.bridge(emb, mask, rating)).squeeze(1)


@register("PTUPCDR")
class PTUPCDR(TransferMethod):
    """Pretrained bases plus a meta-generated personal bridge per user, trained on the target
    task (see module docstring)."""

    Config = PTUPCDRConfig
    config: PTUPCDRConfig
    transfer_: PersonalizedBridge
    history_items_: torch.Tensor
    history_ratings_: torch.Tensor | None
    history_mask_: torch.Tensor

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        target: EmbeddingBase = self.target_
        source_name, target_name = train.transfer_domains()
        src = train.data[source_name].interactions
        if cfg.min_rating is not None:
            src = src.select(src.rating > cfg.min_rating)
        items, ratings, mask = padded_histories(src, train.data.n_users, cfg.max_history)
        use_rating = cfg.rating_feature and not train.implicit
        # The centre of the source ratings, kept to centre a new user's history the same way.
        self.rating_center_ = float(src.rating.float().mean()) if len(src) else 0.0
        if use_rating and len(src):
            ratings = (ratings - src.rating.float().mean()) * mask
        device = context.device
        # Derived from the training data on every fit, so kept out of the state dict: the
        # training loop's best-state snapshots and checkpoints need not copy them.
        self.register_buffer("history_items_", items.to(device), persistent=False)
        self.register_buffer("history_ratings_", ratings.to(device) if use_rating else None,
                             persistent=False)
        self.register_buffer("history_mask_", mask.to(device), persistent=False)

        self.transfer_ = self._new_transfer().to(device)

        # Step 5: the target base's loss on the training overlap users' target interactions.
        tgt = train.data[target_name]
        rows = tgt.interactions.select(torch.isin(tgt.interactions.user, overlap))
        observed = (observed_keys(tgt.interactions.user, tgt.interactions.item, tgt.n_items)
                    if train.implicit else None)
        n_neg = self.config.base_settings().n_neg
        batches = epoch_batches(rows, tgt.n_items, train.implicit, n_neg, observed)

        def loss_fn(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            u, i, t = batch
            return target.loss_with(self.transferred_state(u), i, t)

        fit_stage(self, loss_fn, batches, cfg, context=context, stage="meta",
                  validate=validator(self, validation), parameters=trainable(self.transfer_))

    def _new_transfer(self) -> PersonalizedBridge:
        cfg, source = self.config, self.source_
        if not isinstance(source, FactorBase):
            raise TypeError(f"PTUPCDR needs the source base's item embeddings; "
                            f"{type(source).__name__} has no item_factors table")
        # The width from the table, not from a lookup: a LightGCN base being loaded has no
        # graph yet to propagate.
        item_dim = source.item_factors.embedding_dim
        use_rating = cfg.rating_feature and not source.implicit
        return PersonalizedBridge(item_dim, source.user_dim, self.target_.user_dim,
                                  cfg.meta_dim, cfg.attention_hidden or item_dim, use_rating)

    def new_user_state(self, source_state: torch.Tensor, history: NewHistory) -> torch.Tensor:
        """Step 4 for new users: their bridge from their own history, prepared as a training
        user's is (liked items only with ``min_rating``, the last ``max_history``, ratings
        centred on the training source mean)."""
        rows = Interactions(history.slot, history.item, history.rating, history.timestamp)
        if self.config.min_rating is not None:
            rows = rows.select(rows.rating > self.config.min_rating)
        items, ratings, mask = padded_histories(rows, history.n, self.config.max_history)
        device = source_state.device
        items, mask = items.to(device), mask.to(device)
        centred = None
        if self.transfer_.encoder.rating_feature:
            centred = ((ratings.to(device) - self.rating_center_) * mask)
        return self.transfer_(source_state, source_item_vectors(self.source_, items), mask,
                              centred)

    def history(self, users: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embedded source histories of ``users``: ``(e [B, L, d], mask [B, L], r [B, L])``."""
        ratings = self.history_ratings_
        return (source_item_vectors(self.source_, self.history_items_[users]),
                self.history_mask_[users], None if ratings is None else ratings[users])

    @torch.no_grad()
    def attention(self, users: torch.Tensor) -> torch.Tensor:
        """a_j (step 2) over each user's history, ``[B, max_history]``."""
        return self.transfer_.encoder.attention(*self.history(users))

    @torch.no_grad()
    def bridge(self, users: torch.Tensor) -> torch.Tensor:
        """Each user's personal bridge W_u, ``[B, d_in, d_out]``."""
        return self.transfer_.bridge(*self.history(users))

    def transferred_state(self, users: torch.Tensor) -> torch.Tensor:
        """u^s_u W_u (step 4). ``users`` may repeat (one row per scored pair): each distinct
        user's bridge is generated once."""
        distinct, inverse = torch.unique(users, return_inverse=True)
        state = self.transfer_(self.source_.user_state(distinct), *self.history(distinct))
        return state[inverse]
