"""DNN: a two-tower neural base in the style of the YouTube candidate model (Covington, Adams,
Sargin, "Deep Neural Networks for YouTube Recommendations", RecSys 2016, Sec. 3), the "DNN" base
of PTUPCDR's and MetaEM's generalisation experiments (MetaEM, Sec. 5, Fig. 3).

- towers: a user tower f_U over the user embedding p_u and an item tower f_I over the item
  embedding q_i, each an MLP with ReLU between layers (sizes ``[dim, *hidden]``, default
  ``hidden = [dim, dim]``; no activation after the last layer);
- score: s(u, i) = <f_U(p_u), f_I(q_i)> on implicit feedback, trained with the default binary
  cross-entropy of the bases (sigmoid of the score, each positive and its sampled negatives);
- explicit ratings: r_hat = mu + b_i + <f_U(p_u), f_I(q_i)> under squared error.

The papers give no equations for this base; the choices here: the user state is p_u, the
embedding *before* the user tower, so a mapping produces an embedding and the tower stays part of
the target model (``state_after_tower=false``, the default). MetaEM's text says the mapping
transforms the *output* of the user tower; ``state_after_tower=true`` gives that form (state
f_U(p_u); a user without data then has the state f_U(0), a learned item-side-only prior). The
L2 penalty covers the embedding rows of a batch (negatives scaled by 1/sqrt(n_neg)) and item
biases, not the tower weights. Tower weights are initialised from the fit's generator (uniform
in +-1/sqrt(fan_in), PyTorch's default range) so fits are reproducible.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from cdrec.models.bases.interface import BaseConfig, FactorBase
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register
from cdrec.nn import MLP


class DNNConfig(BaseConfig):
    hidden: list[PositiveInt] | None = Field(None, min_length=1, description=(
        "layer sizes of each tower after the embedding (default [dim, dim])"))
    state_after_tower: bool = Field(False, description=(
        "user state = user tower output (MetaEM's wording) instead of the embedding p_u"))

    def tower_sizes(self) -> list[int]:
        return [self.dim, *(self.hidden or [self.dim, self.dim])]


def tower(sizes: list[int], generator: torch.Generator | None, *,
          output_activation: bool = False) -> MLP:
    """A ReLU MLP whose weights and biases are drawn from ``generator`` (a ReLU after the last
    layer too with ``output_activation``, as NeuMF's tower has)."""
    mlp = MLP(sizes, activation=nn.ReLU, output_activation=output_activation)
    with torch.no_grad():
        for layer in mlp:
            if isinstance(layer, nn.Linear):
                bound = layer.in_features ** -0.5
                for p in (layer.weight, layer.bias):
                    p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
    return mlp


@register_base("DNN")
class DNNBase(FactorBase):
    """Two towers over user and item embeddings; score is the inner product of their outputs."""

    Config = DNNConfig
    config: DNNConfig
    global_mean: torch.Tensor  # buffer

    def __init__(self, n_users: int, n_items: int, config: DNNConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std)
        sizes = config.tower_sizes()
        self.user_tower = tower(sizes, generator)
        self.item_tower = tower(sizes, generator)
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=not implicit)
        self.register_buffer("global_mean", torch.tensor(0.0 if implicit else float(global_mean)))

    @property
    def user_dim(self) -> int:
        sizes = self.config.tower_sizes()
        return sizes[-1] if self.config.state_after_tower else sizes[0]

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        p = self.user_factors(users)
        return self.user_tower(p) if self.config.state_after_tower else p

    def bias_rows(self) -> list[nn.Parameter]:
        return [self.item_bias]

    def extra_penalty_rows(self, users: torch.Tensor, items: torch.Tensor
                           ) -> list[torch.Tensor]:
        return [] if self.implicit else [self.rows(self.item_bias, items)]

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = state if self.config.state_after_tower else self.user_tower(state)
        out = u @ self.item_tower(self.item_factors.weight[items]).T
        if not self.implicit:
            out = out + (self.global_mean + self.item_bias[items])
        return out

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = state if self.config.state_after_tower else self.user_tower(state)
        out = (u * self.item_tower(self.item_factors(items))).sum(-1)
        if not self.implicit:
            out = out + self.global_mean + self.rows(self.item_bias, items)
        return out






@register("DNN")
class DNN(SingleDomain):
    """The two-tower DNN base on each domain separately (squared error on ratings; BCE on
    implicit feedback)."""

    base_name = "DNN"
