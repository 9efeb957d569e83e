"""ListRank-MF: list-wise learning to rank with matrix factorisation (Shi, Larson, Hanjalic,
"List-wise learning to rank with matrix factorization for collaborative filtering", RecSys 2010).

The model, as the paper defines it:

- prediction: g(p_u . q_i) with g the logistic function 1 / (1 + exp(-x));
- top-one probability of item j in the list l_u of user u, for any scores s:
  P_{l_u}(s_j) = phi(s_j) / sum_{k in l_u} phi(s_k) with phi = exp, i.e. a softmax over the list;
- loss: L(U, V) = sum_u - sum_{j in l_u} P_{l_u}(r_uj) log P_{l_u}(g(p_u . q_j))
  + lambda / 2 (||U||^2 + ||V||^2): the cross-entropy between the top-one distributions of the
  true ratings and of the predictions, plus L2 on the factors.

Sampled-list form (the choice made here). The paper's list l_u is every item u rated; on
implicit feedback (TMCDR binarises the data) a user's observed items are all 1 and carry no order
among themselves, so cdrec uses as the list each positive with its ``n_neg`` sampled negatives:
true scores 1 for the positive and 0 for the negatives, vectorised as a ``[B, 1 + n_neg]`` softmax.
By default the true top-one distribution is the paper's exp-softmax of those 0/1 scores
(e / (e + n_neg) on the positive); ``one_hot_target=true`` puts all the mass on the positive
instead. Both have the same optimum direction (g -> 1 on the positive, g -> 0 on negatives); the
paper's form reaches zero gradient there, the one-hot form keeps pushing.

Explicit ratings are not supported (``implicit_only``): a per-user list of graded ratings does
not fit the row-wise batches of the shared training loop, and TMCDR uses the binarised form.
The L2 term is the shared per-batch penalty (rows touched, negatives scaled by 1/sqrt(n_neg)),
with ``reg`` 0.01 by default: the logistic g bounds the scores to (0, 1), so the loss gradients are
small and MF's 0.1 pulls every factor to zero before the lists are learned.
The user state is p_u.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from cdrec.models.bases.interface import BaseConfig, FactorBase, weighted_mean
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register


class ListRankMFConfig(BaseConfig):
    reg: float = Field(0.01, ge=0, description=(
        "L2 weight on the embedding rows of a batch (lower than MF's: the bounded g(x) gives "
        "small gradients that a larger weight overwhelms)"))
    one_hot_target: bool = Field(False, description=(
        "true top-one distribution all on the positive (False: the paper's softmax of 0/1)"))


@register_base("ListRankMF")
class ListRankMFBase(FactorBase):
    """ListRank-MF factors; score g(p_u . q_i), trained with the list-wise cross-entropy."""

    Config = ListRankMFConfig
    config: ListRankMFConfig
    implicit_only = True

    def __init__(self, n_users: int, n_items: int, config: ListRankMFConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std)



    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(state @ self.item_factors.weight[items].T)

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((state * self.item_factors(items)).sum(-1))

    def loss_with(self, state: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.score_with(state, items).unsqueeze(-1)  # [B, 1]
        neg = self.score_with(state.unsqueeze(-2), target)  # [B, n_neg]
        log_pred = F.log_softmax(torch.cat([pos, neg], -1), -1)  # log P(g(p_u . q_j))
        n_neg = target.shape[-1]
        if self.config.one_hot_target:
            loss = -log_pred[..., 0]
        else:  # softmax of the true 0/1 scores: e / (e + n) on the positive, 1 / (e + n) else
            denom = math.e + n_neg
            loss = -(math.e * log_pred[..., 0] + log_pred[..., 1:].sum(-1)) / denom
        return weighted_mean(loss, weight)






@register("ListRankMF")
class ListRankMF(SingleDomain):
    """ListRank-MF on each domain separately (implicit feedback, sampled lists)."""

    base_name = "ListRankMF"

