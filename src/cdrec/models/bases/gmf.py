"""GMF: generalized matrix factorisation (He, Liao, Zhang, Nie, Hu, Chua, "Neural Collaborative
Filtering", WWW 2017, Sec. 3.2), the base PTUPCDR and MetaEM use next to MF and DNN.

- interaction (Eq. 8): phi(p_u, q_i) = p_u * q_i (element-wise);
- prediction (Eq. 9): y_hat = a_out(h^T (p_u * q_i)), with a learned weight vector h and
  a_out the logistic function on implicit feedback;
- implicit feedback: the log loss of NCF (Eq. 7) over each positive and its sampled negatives,
  i.e. the default binary cross-entropy of the bases (sigmoid of the score, labels 1 / 0);
- explicit ratings (PTUPCDR/MetaEM's setting, not in the NCF paper): a_out is the identity plus
  a global mean and an item bias, r_hat = mu + b_i + h^T (p_u * q_i), under squared error.

Choices: h starts at the all-ones vector, so GMF starts as plain MF (the NCF paper's remark under
Eq. 9), and h carries no bias. The L2 penalty covers the embedding rows of a batch (negatives
scaled by 1/sqrt(n_neg)), item biases, and h itself: with h free, shrinking p and q while
growing h would lower the penalty without changing a single score. There is no user bias: the user state
is p_u alone, the vector a mapping produces for a cold-start user.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from cdrec.models.bases.interface import BaseConfig, FactorBase
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register


@register_base("GMF")
class GMFBase(FactorBase):
    """GMF: score h^T (p_u * q_i) (+ mu + b_i on ratings)."""

    Config: ClassVar[type[BaseConfig]] = BaseConfig  # NeuMF's subclass sets its own
    global_mean: torch.Tensor  # buffer

    def __init__(self, n_users: int, n_items: int, config: BaseConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std)
        self.h = nn.Parameter(torch.ones(config.dim))
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=not implicit)
        self.register_buffer("global_mean", torch.tensor(0.0 if implicit else float(global_mean)))

    def bias_rows(self) -> list[nn.Parameter]:
        return [self.item_bias]

    def extra_penalty_rows(self, users: torch.Tensor, items: torch.Tensor
                           ) -> list[torch.Tensor]:
        # h is shared by the whole batch: counted once, it weighs as much as one embedding row.
        bias = [] if self.implicit else [self.rows(self.item_bias, items)]
        return [self.h.unsqueeze(0), *bias]

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = (state * self.h) @ self.item_factors.weight[items].T
        if not self.implicit:
            out = out + (self.global_mean + self.item_bias[items])
        return out

    def interaction(self, state: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        """phi(p_u, q_i) = p_u * q_i (Eq. 8), broadcast over the batch layouts of
        ``score_with``; the vector that h weighs (NeuMF extends it with its MLP tower)."""
        return state * item_rows

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = (self.interaction(state, self.item_factors(items)) * self.h).sum(-1)  # Eq. 9
        if not self.implicit:
            out = out + self.global_mean + self.rows(self.item_bias, items)
        return out


@register("GMF")
class GMF(SingleDomain):
    """GMF on each domain separately (squared error on ratings; BCE on implicit feedback)."""

    base_name = "GMF"
