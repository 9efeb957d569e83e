"""Factor tables and MLP blocks."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


class BiasedMF(nn.Module):
    """r_hat(u, i) = mu + b_u + b_i + p_u . q_i  (Koren et al., 2009, Eq. 4).

    With ``use_bias=False`` it is plain MF, r_hat = p_u . q_i, as in EMCDR's and TMCDR's papers.
    ``user_factors`` may be passed in to share one user table across domains (CMF).
    """

    def __init__(self, n_users: int, n_items: int, dim: int, *, use_bias: bool = True,
                 init_std: float = 0.1, global_mean: float = 0.0,
                 user_factors: nn.Embedding | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.use_bias = use_bias
        self.user_factors = user_factors or nn.Embedding(n_users, dim)
        self.item_factors = nn.Embedding(n_items, dim)
        with torch.no_grad():
            if user_factors is None:
                self.user_factors.weight.copy_(torch.randn(n_users, dim, generator=generator)
                                               * init_std)
            self.item_factors.weight.copy_(torch.randn(n_items, dim, generator=generator)
                                           * init_std)
        self.user_bias = nn.Parameter(torch.zeros(n_users), requires_grad=use_bias)
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=use_bias)
        self.register_buffer("global_mean", torch.tensor(float(global_mean) if use_bias else 0.0))

    def score_with(self, user_vec: torch.Tensor, user_bias: torch.Tensor,
                   items: torch.Tensor) -> torch.Tensor:
        """Score items for given user representations (factors, bias): the hook mapping methods
        use to plug in a user vector that was not learned in this domain."""
        out = (user_vec * self.item_factors(items)).sum(-1)
        if self.use_bias:
            out = out + self.global_mean + user_bias + self.item_bias[items]
        return out

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_with(self.user_factors(users), self.user_bias[users], items)

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        """[factors, bias] per user: what a cold-start mapping must carry across domains."""
        return torch.cat([self.user_factors(users), self.user_bias[users].unsqueeze(-1)], -1)

    def reset_users(self, users: torch.Tensor) -> None:
        """Set factors and bias of ``users`` to the prior mean (zero): for users who had no data
        here, so their predictions are the item-side floor rather than random noise."""
        with torch.no_grad():
            self.user_factors.weight[users] = 0.0
            self.user_bias[users] = 0.0


class MLP(nn.Sequential):
    """Linear layers with an activation between them (none after the last)."""

    def __init__(self, sizes: list[int], activation: type[nn.Module] = nn.Tanh,
                 dropout: float = 0.0) -> None:
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
