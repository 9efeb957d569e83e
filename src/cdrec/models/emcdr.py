"""EMCDR: embedding and mapping for cross-domain recommendation (Man et al., IJCAI 2017).

1. Latent factor modelling: a base model per domain (any registered base: MF, BPR, ...).
2. Latent space mapping: a function f, linear (EMCDR Eq. 4) or a one-hidden-layer MLP with tanh
   (EMCDR Eq. 6, hidden size 2k), fitted on overlap users by minimising
   sum_u ||f(U^s_u) - U^t_u||^2 (Eq. 3/5): the distance-oriented objective.
3. Cold-start users in the target get f(U^s_u) as their target user state.

What cdrec adds (selectable, so the paper's form can be reported too): with the default biased
MF base the user state is ``[p_u, b_u]``, so the mapping carries the user bias with the factors,
since a cold-start user's target bias is otherwise unknown. ``base_config.use_bias=false`` is the
paper's plain-MF form. ``overlap_only=true`` pretrains both bases on overlap users only, the
original EMCDR setting (TMCDR's ``EMCDR_ori``); by default the bases use all training data
(TMCDR Sec. 2.1). Early stopping of the mapping uses the cold-start validation users.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from cdrec.models.base import ModelConfig, Recommender, register, validator
from cdrec.models.bases import (
    BaseConfig,
    EmbeddingBase,
    base_class,
    pretrain_base,
    users_without_data,
)
from cdrec.nn import MLP
from cdrec.scenarios.base import Evaluator, TrainView
from cdrec.train import FitContext, train_loop


class TransferConfig(ModelConfig):
    """What every method over pretrained per-domain bases shares: which base and its settings."""

    base: str = Field("MF", description="the registered base model of both domains")
    base_config: dict[str, Any] = Field(default_factory=dict, description=(
        "hyper-parameters of the base (validated against the base's own config)"))
    overlap_only: bool = Field(False, description="pretrain the bases on overlap users only")

    @model_validator(mode="before")
    @classmethod
    def _resolve_base(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            name = data.get("base", cls.model_fields["base"].default)
            settings = base_class(name).Config(**(data.get("base_config") or {}))
            data["base_config"] = settings.model_dump()
        return data

    def base_settings(self) -> BaseConfig:
        return base_class(self.base).Config(**self.base_config)


class TransferMethod(Recommender):
    """Base class of methods that pretrain a source and a target base and then learn how a
    cold-start user's source state becomes a target state. Subclasses set ``transfer_`` (a module
    mapping source states to target states) in ``_fit_transfer``."""

    supports = frozenset({"coldstart"})
    variant_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__(**{**self.variant_defaults, **params})

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        overlap = train.data.overlap_users(train.source, train.target)
        if overlap.numel() == 0:
            raise ValueError(f"{type(self).__name__} needs overlap users between "
                             f"{train.source!r} and {train.target!r} in the training data")
        view = restrict_to_users(train, overlap) if self.config.overlap_only else train
        settings = self.config.base_settings()
        self.source_ = pretrain_base(view, train.source, self.config.base, settings, context)
        self.target_ = pretrain_base(view, train.target, self.config.base, settings, context)
        for p in [*self.source_.parameters(), *self.target_.parameters()]:
            p.requires_grad_(False)
        self.domains_ = (train.source, train.target)
        has_target = torch.ones(train.data.n_users, dtype=torch.bool)
        has_target[users_without_data(view, train.target)] = False
        self.register_buffer("has_target_", has_target.to(context.device))
        self._fit_transfer(train, overlap, validation, context)

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        raise NotImplementedError  # abstract: the method's own stage

    def transferred_state(self, users: torch.Tensor) -> torch.Tensor:
        """Target-space state of ``users`` computed from their source state."""
        return self.transfer_(self.source_.user_state(users))

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain == self.domains_[0]:
            return self.source_(users, items)
        if domain != self.domains_[1]:
            raise KeyError(f"{type(self).__name__} was fitted for {self.domains_}, "
                           f"not {domain!r}")
        own = self.target_(users, items)
        transferred = self.target_.score_with(self.transferred_state(users), items)
        return torch.where(self.has_target_[users], own, transferred)


def restrict_to_users(train: TrainView, users: torch.Tensor) -> TrainView:
    """The train view with every domain's interactions limited to ``users``."""
    domains = {name: dom.with_interactions(dom.interactions.select(
        torch.isin(dom.interactions.user, users))) for name, dom in train.data.domains.items()}
    return TrainView(train.data.replace_domains(domains), train.scenario, train.source,
                     train.target, train.implicit)


def mapping_network(kind: str, dim_in: int, dim_out: int, hidden_factor: int = 2) -> nn.Module:
    """EMCDR's mapping: linear (Eq. 4) or MLP with one tanh hidden layer (Eq. 6)."""
    if kind == "linear":
        return nn.Linear(dim_in, dim_out)
    return MLP([dim_in, hidden_factor * dim_in, dim_out])


class EMCDRConfig(TransferConfig):
    mapping: Literal["linear", "mlp"] = "mlp"
    hidden_factor: int = Field(2, ge=1, description="MLP hidden size = hidden_factor * input size")
    epochs: int = Field(500, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.005, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(20, ge=1)


@register("EMCDR")
class EMCDR(TransferMethod):
    """Pretrained source/target bases plus a mapping fitted on overlap users (distance loss)."""

    Config = EMCDRConfig

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        self.transfer_ = mapping_network(cfg.mapping, self.source_.user_dim,
                                         self.target_.user_dim, cfg.hidden_factor)
        self.transfer_.to(context.device)
        source: EmbeddingBase = self.source_
        target: EmbeddingBase = self.target_

        def loss_fn(batch: list[torch.Tensor]) -> torch.Tensor:
            (u,) = batch
            return (self.transfer_(source.user_state(u))
                    - target.user_state(u)).pow(2).sum(-1).mean()

        train_loop(self, loss_fn, lambda gen: [overlap], context=context, stage="mapping",
                   epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                   weight_decay=cfg.weight_decay, parameters=list(self.transfer_.parameters()),
                   validate=validator(self, validation), patience=cfg.patience)
