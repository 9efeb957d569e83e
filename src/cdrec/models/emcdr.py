"""EMCDR: embedding and mapping for cross-domain recommendation (Man et al., IJCAI 2017).

1. Latent factor modelling: a factor model per domain (here the shared :class:`MF` base).
2. Latent space mapping: a function f, linear (EMCDR Eq. 4) or a one-hidden-layer MLP with tanh
   (EMCDR Eq. 6, hidden size 2k), fitted on overlap users by minimising
   sum_u ||f(U^s_u) - U^t_u||^2 (Eq. 3/5), the distance-oriented objective.
3. Cold-start users in the target get f(U^s_u) as their target user representation.

What cdrec adds (selectable, so the paper's form can be reported too): the bases are biased MF by
default and the mapping carries the user bias with the factors (``map_bias``), since a cold-start
user's target bias is otherwise unknown. ``base.use_bias=false, map_bias=false`` is the paper's
plain-MF form. ``overlap_only=true`` pretrains both bases on overlap users only, the original
EMCDR setting (TMCDR's ``EMCDR_ori``); by default the bases use all training data (TMCDR 2.1).
Early stopping of the mapping uses the cold-start validation users' target metric.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from cdrec.models.base import ModelConfig, Recommender, register, validator
from cdrec.models.mf import MFConfig, pretrain_base, users_without_data
from cdrec.nn import MLP, BiasedMF
from cdrec.scenarios.base import Evaluator, TrainView
from cdrec.train import FitContext, train_loop


class EMCDRConfig(ModelConfig):
    base: MFConfig = Field(default_factory=MFConfig, description="the per-domain factor models")
    mapping: Literal["linear", "mlp"] = "mlp"
    hidden_factor: int = Field(2, ge=1, description="MLP hidden size = hidden_factor * input size")
    map_bias: bool = Field(True, description="map [factors, user bias], not the factors alone")
    overlap_only: bool = Field(False, description="pretrain the bases on overlap users only")
    epochs: int = Field(500, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.005, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(20, ge=1)


def restrict_to_users(train: TrainView, users: torch.Tensor) -> TrainView:
    """The train view with every domain's interactions limited to ``users``."""
    domains = {name: dom.with_interactions(dom.interactions.select(
        torch.isin(dom.interactions.user, users))) for name, dom in train.data.domains.items()}
    return TrainView(train.data.replace_domains(domains), train.scenario, train.source,
                     train.target, train.implicit)


@register("EMCDR")
class EMCDR(Recommender):
    """Pretrained source/target factor models plus a mapping fitted on overlap users."""

    Config = EMCDRConfig
    supports = frozenset({"coldstart"})

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        overlap = train.data.overlap_users(train.source, train.target)
        if overlap.numel() == 0:
            raise ValueError(f"EMCDR needs overlap users between {train.source!r} and "
                             f"{train.target!r} in the training data; there are none")
        base_view = restrict_to_users(train, overlap) if cfg.overlap_only else train
        self.source_ = pretrain_base(base_view, train.source, cfg.base, context)
        self.target_ = pretrain_base(base_view, train.target, cfg.base, context)
        self.domains_ = (train.source, train.target)
        self.register_buffer("has_target_", torch.ones(train.data.n_users, dtype=torch.bool))
        self.has_target_[users_without_data(base_view, train.target)] = False
        dim = cfg.base.dim + (1 if cfg.map_bias else 0)
        self.mapping_ = (nn.Linear(dim, dim) if cfg.mapping == "linear"
                         else MLP([dim, cfg.hidden_factor * dim, dim]))
        self.to(context.device)
        for p in [*self.source_.parameters(), *self.target_.parameters()]:
            p.requires_grad_(False)

        def epoch_data(gen: torch.Generator) -> list[torch.Tensor]:
            return [overlap]

        def loss_fn(batch: list[torch.Tensor]) -> torch.Tensor:
            (u,) = batch
            return (self.mapping_(self._user_state(self.source_, u))
                    - self._user_state(self.target_, u)).pow(2).sum(-1).mean()

        self.stage_ = train_loop(self, loss_fn, epoch_data, context=context, stage="mapping",
                                 epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                 weight_decay=cfg.weight_decay,
                                 parameters=list(self.mapping_.parameters()),
                                 validate=validator(self, validation), patience=cfg.patience)

    def _user_state(self, mf: BiasedMF, users: torch.Tensor) -> torch.Tensor:
        return mf.user_state(users) if self.config.map_bias else mf.user_factors(users)

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain == self.domains_[0]:
            return self.source_(users, items)
        if domain != self.domains_[1]:
            raise KeyError(f"EMCDR was fitted for {self.domains_}, not {domain!r}")
        own = self.target_(users, items)
        mapped = self.mapping_(self._user_state(self.source_, users))
        dim = self.config.base.dim
        bias = mapped[..., dim] if self.config.map_bias else torch.zeros_like(own)
        transferred = self.target_.score_with(mapped[..., :dim], bias, items)
        return torch.where(self.has_target_[users], own, transferred)
