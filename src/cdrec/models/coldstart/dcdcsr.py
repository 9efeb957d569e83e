"""DCDCSR: a deep framework for cross-domain and cross-system recommendations (Zhu, Wang, Chen,
Liu, Orgun, Wu, IJCAI 2018; arXiv 2009.06215), the MetaEM baseline [18].

The paper's text is not among cdrec's shipped papers; this is cdrec's reading of its published
description, with equation numbers ours, in the paper's order. In the cross-domain case the users
are shared and the items differ, so the benchmark ("standard domain") is built on the user side.

1. MF modelling: an MF base per domain (the paper: MMMF/PMF-style rating MF; cdrec: any
   registered base, biased MF by default). U^s_u, U^t_u are the user states.
2. Sparsity degrees (Eq. 1): per domain d, a user's degree is its interaction count relative to
   the domain's item count, and an item's its count relative to the domain's user count
         sd^d_u = n^d_u / |I^d|,        sd^d_i = n^d_i / |U^d|
   (|U^d|: users with data in d). Only the user degrees are used here: the item degrees weigh item
   factors in the cross-system case (shared items), which the cold-start scenario does not have.
3. Benchmark factors (Eq. 2): a user's standard-domain state mixes its two domain states, the
   denser side weighted more,
         B_u = w^s_u U^s_u + w^t_u U^t_u,   w^d_u = sd^d_u / (sd^s_u + sd^t_u)
   (B_u = 0 for a user with no data in either domain).
4. DNN mapping (Eq. 3): a fully connected network g fitted on the training overlap users,
         min_g mean_u ||g(U^t_u) - B_u||^2                   (``train_inputs="target"``)
   The paper maps a user's target factors to the benchmark. A cold-start user has no target
   factors, so (MetaEM's use of DCDCSR) g is applied to its source factors; cdrec therefore also
   feeds the same users' source factors by default (``train_inputs="both"``):
         min_g mean_u ||g(U^t_u) - B_u||^2 + ||g(U^s_u) - B_u||^2
   so that g has seen inputs from the space it is used on. ``"target"`` is the literal form.
5. Prediction (Eq. 4): a cold-start user's target state is g(U^s_u), scored against the target
   items (with MF: mu + b_i + the mapped [p_u, b_u]); users with target data keep their own.

Defaults: the paper's DNN sizes and activation are not recovered; cdrec uses ``depth`` = 2 tanh
hidden layers of 2 x dim, and EMCDR's optimiser settings (Adam, lr 0.005, batch 256).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from cdrec.data.dataset import Interactions
from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.coldstart.transfer import TransferConfig, TransferMethod
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.nn import MLP
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class DCDCSRConfig(TransferConfig, TrainingConfig):
    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 500, "batch_size": 256, "lr": 0.005, "patience": 20}

    depth: int = Field(2, ge=1, description="hidden layers of the DNN g (cdrec's choice)")
    hidden_factor: int = Field(2, ge=1, description="hidden size = hidden_factor * input size")
    train_inputs: Literal["both", "target"] = Field("both", description=(
        "inputs g is fitted on: target factors (the paper) or target and source factors"))


def sparsity_degrees(interactions: Interactions, n_users: int, n_items: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: ``(user_degree [n_users], item_degree [n_items])`` of one domain: interaction
    counts over the domain's item count (users) and over its count of active users (items)."""
    per_user = torch.bincount(interactions.user, minlength=n_users).double()
    per_item = torch.bincount(interactions.item, minlength=n_items).double()
    active_users = (per_user > 0).sum().clamp_min(1)
    return (per_user / max(n_items, 1)).float(), (per_item / active_users).float()


def benchmark_weights(train: TrainView) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 weights ``(w_source, w_target)`` per user: each domain's share of the user's summed
    sparsity degrees (both 0 for a user with data in neither domain)."""
    source, target = train.transfer_domains()
    degree = {}
    for name in (source, target):
        dom = train.data[name]
        degree[name], _ = sparsity_degrees(dom.interactions, train.data.n_users, dom.n_items)
    total = degree[source] + degree[target]
    safe = total.clamp_min(torch.finfo(total.dtype).tiny)
    return degree[source] / safe, degree[target] / safe


def deep_mapping(dim_in: int, dim_out: int, depth: int, hidden_factor: int) -> MLP:
    """The DNN g of Eq. 3: ``depth`` tanh hidden layers of ``hidden_factor * dim_in`` units."""
    return MLP([dim_in, *[hidden_factor * dim_in] * depth, dim_out])


@register("DCDCSR")
class DCDCSR(TransferMethod):
    """MF bases, a sparsity-weighted benchmark of user factors, a DNN mapped onto it."""

    Config = DCDCSRConfig
    config: DCDCSRConfig
    w_source_: torch.Tensor
    w_target_: torch.Tensor

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        source: EmbeddingBase = self.source_
        target: EmbeddingBase = self.target_
        w_source, w_target = benchmark_weights(train)
        self.register_buffer("w_source_", w_source.to(context.device), persistent=False)
        self.register_buffer("w_target_", w_target.to(context.device), persistent=False)
        # Both bases share one config, so U^s, U^t and B have one size.
        self.transfer_ = self._new_transfer().to(context.device)
        both = cfg.train_inputs == "both"

        def loss_fn(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            (u,) = batch
            s, t = source.user_state(u), target.user_state(u)
            bench = self.benchmark(u, s, t)
            loss = (self.transfer_(t) - bench).pow(2).sum(-1).mean()
            if both:
                loss = loss + (self.transfer_(s) - bench).pow(2).sum(-1).mean()
            return loss

        fit_stage(self, loss_fn, lambda gen: [overlap], cfg, context=context, stage="mapping",
                  validate=validator(self, validation), parameters=trainable(self.transfer_))

    def _new_transfer(self) -> torch.nn.Module:
        return deep_mapping(self.source_.user_dim, self.target_.user_dim, self.config.depth,
                            self.config.hidden_factor)

    def benchmark(self, users: torch.Tensor, source_state: torch.Tensor,
                  target_state: torch.Tensor) -> torch.Tensor:
        """Eq. 2: B_u = w^s_u U^s_u + w^t_u U^t_u."""
        return (self.w_source_[users].unsqueeze(-1) * source_state
                + self.w_target_[users].unsqueeze(-1) * target_state)
