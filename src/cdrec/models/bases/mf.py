"""Matrix factorisation bases: biased MF (ratings, or sampled BCE on implicit feedback) and
BPR-MF (pairwise ranking), with their single-domain recommenders MF, TGT and BPR.

- MF: r_hat(u, i) = mu + b_u + b_i + p_u . q_i, squared error (Koren, Bell, Volinsky, 2009,
  Eq. 4-5); on implicit feedback the same score under binary cross-entropy against sampled
  negatives. ``use_bias=false`` gives the plain p_u . q_i of EMCDR's and TMCDR's papers.
- BPR: the same factors trained with -ln sigma(x_ui - x_uj) over sampled unobserved j
  (Rendle et al., UAI 2009, Eq. 7 / Alg. 1), for implicit feedback only.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cdrec.models.bases.interface import BaseConfig, FactorBase, weighted_mean
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register
from cdrec.nn.losses import bpr_loss_terms


class MFConfig(BaseConfig):
    use_bias: bool = Field(True, description="global, user and item biases (False: plain p.q)")


def mf_scores(state: torch.Tensor, item_rows: torch.Tensor, item_bias: torch.Tensor,
              global_mean: torch.Tensor, *, use_bias: bool) -> torch.Tensor:
    """p_u . q_i (+ mu + b_u + b_i): ``state`` ``[..., k(+1)]`` (the user bias last) with the
    items' rows ``[..., k]`` and biases ``[...]``, broadcast together. The one formula the MF
    base and a federated MF device both compute."""
    dim = item_rows.shape[-1]
    out = (state[..., :dim] * item_rows).sum(-1)
    if use_bias:
        out = out + global_mean + state[..., dim] + item_bias
    return out


@register_base("MF")
class MFBase(FactorBase):
    """Biased MF; the user state is ``[p_u, b_u]`` (``p_u`` alone without biases).

    ``user_factors`` may be passed in to share one user table across domains (CMF).
    """

    Config = MFConfig
    config: MFConfig
    global_mean: torch.Tensor  # buffer

    def __init__(self, n_users: int, n_items: int, config: MFConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 user_factors: nn.Embedding | None = None, init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std, user_factors=user_factors)
        self.use_bias = config.use_bias
        self.user_bias = nn.Parameter(torch.zeros(n_users), requires_grad=self.use_bias)
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=self.use_bias)
        mean = float(global_mean) if self.use_bias else 0.0
        self.register_buffer("global_mean", torch.tensor(mean))

    @property
    def user_dim(self) -> int:
        return self.config.dim + (1 if self.use_bias else 0)

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        p = self.user_factors(users)
        if not self.use_bias:
            return p
        return torch.cat([p, self.rows(self.user_bias, users).unsqueeze(-1)], -1)

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return mf_scores(state, self.item_factors(items), self.rows(self.item_bias, items),
                         self.global_mean, use_bias=self.use_bias)


    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dim = self.config.dim
        out = state[:, :dim] @ self.item_factors.weight[items].T
        if self.use_bias:
            out = out + (self.global_mean + state[:, dim:dim + 1] + self.item_bias[items])
        return out

    def bias_rows(self) -> list[nn.Parameter]:
        return [self.user_bias, self.item_bias]

    def extra_penalty_rows(self, users: torch.Tensor, items: torch.Tensor
                           ) -> list[torch.Tensor]:
        if not self.use_bias:
            return []
        return [self.rows(self.user_bias, users), self.rows(self.item_bias, items)]

    def reset_users(self, users: torch.Tensor) -> None:
        super().reset_users(users)
        with torch.no_grad():
            self.user_bias[users] = 0.0


@register_base("BPR")
class BPRBase(MFBase):
    """BPR-MF: x_ui = p_u . q_i (+ b_i), trained with the BPR criterion."""

    implicit_only = True

    def loss_with(self, state: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.score_with(state, items)
        neg = self.score_with(state.unsqueeze(-2), target)
        return weighted_mean(bpr_loss_terms(pos, neg).mean(-1), weight)


@register("MF")
class MF(SingleDomain):
    """Biased MF on each domain separately (squared error; BCE on implicit feedback)."""

    base_name = "MF"


@register("TGT")
class TGT(MF):
    """MF trained on the target domain only: cold-start users get the item-side prediction
    (their factors are the prior, zero), the floor every transfer method must beat."""

    supports = frozenset({"coldstart"})
    merge_in_coldstart = False
    serves_new_users_at_prior = True


@register("BPR")
class BPR(SingleDomain):
    """BPR-MF on each domain separately (implicit feedback)."""

    base_name = "BPR"


