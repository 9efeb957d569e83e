"""The family base of cold-start transfer methods: pretrained source and target bases (shared
through ``cdrec.models.bases``), then a method-specific stage that turns a cold-start user's
source state into a target state (EMCDR's mapping, TMCDR's meta network, PTUPCDR's bridge)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from cdrec.models.bases.interface import BaseConfig, EmbeddingBase
from cdrec.models.bases.pretrain import pretrain_base, users_without_data
from cdrec.models.bases.registry import base_class, base_spec, build_base
from cdrec.models.recommender import ModelConfig, Recommender
from cdrec.models.serving import NewHistory, fold_in
from cdrec.nn import MLP
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext


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
    config: TransferConfig
    # Learned in ``_fit`` (``transfer_`` by the subclass's ``_fit_transfer``).
    source_: EmbeddingBase
    target_: EmbeddingBase
    transfer_: nn.Module
    has_target_: torch.Tensor
    domains_: tuple[str, str]

    def __init__(self, **params: Any) -> None:
        merged = {**self.variant_defaults, **params}
        for key, preset in self.variant_defaults.items():  # a variant's preset base settings
            if isinstance(preset, dict) and isinstance(params.get(key), dict):  # survive a
                merged[key] = {**preset, **params[key]}  # user's own base_config
        super().__init__(**merged)

    def overlap_view(self, train: TrainView) -> tuple[torch.Tensor, TrainView]:
        """The training overlap users, and the view the bases train on (all users, or the
        overlap users only with ``overlap_only``)."""
        source, target = train.transfer_domains()
        overlap = train.data.overlap_users(source, target)
        if overlap.numel() == 0:
            raise ValueError(f"{type(self).__name__} needs overlap users between "
                             f"{source!r} and {target!r} in the training data")
        return overlap, restrict_to_users(train, overlap) if self.config.overlap_only else train

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        source, target = train.transfer_domains()
        overlap, view = self.overlap_view(train)
        settings = self.config.base_settings()
        self._set_bases(pretrain_base(view, source, self.config.base, settings, context),
                        pretrain_base(view, target, self.config.base, settings, context),
                        view, context)
        self._fit_transfer(train, overlap, validation, context)

    def _set_bases(self, source: EmbeddingBase, target: EmbeddingBase, view: TrainView,
                   context: FitContext) -> None:
        """Keep the pretrained bases (frozen) and which users have target data in ``view``."""
        self.source_, self.target_ = source, target
        for p in [*source.parameters(), *target.parameters()]:
            p.requires_grad_(False)
        self.domains_ = view.transfer_domains()
        has_target = torch.ones(view.data.n_users, dtype=torch.bool)
        has_target[users_without_data(view, self.domains_[1])] = False
        # Derived from the training data here, so kept out of state dicts and checkpoints (as
        # every buffer a method computes in _fit): a resumed fit recomputes it.
        self.register_buffer("has_target_", has_target.to(context.device), persistent=False)

    @abstractmethod
    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        """The method's own stage: sets ``transfer_`` from the overlap users."""

    @abstractmethod
    def _new_transfer(self) -> nn.Module:
        """The untrained ``transfer_`` module, sized from the config and the bases: what
        ``_fit_transfer`` trains, and what a saved model is loaded into."""

    def architecture(self) -> dict[str, Any]:
        return {"source": base_spec(self.source_), "target": base_spec(self.target_)}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        self.source_ = build_base(architecture["source"])
        self.target_ = build_base(architecture["target"])
        for p in [*self.source_.parameters(), *self.target_.parameters()]:
            p.requires_grad_(False)
        self.transfer_ = self._new_transfer()

    def transferred_state(self, users: torch.Tensor) -> torch.Tensor:
        """Target-space state of ``users`` computed from their source state."""
        return self.transfer_(self.source_.user_state(users))

    def new_user_state(self, source_state: torch.Tensor, history: NewHistory) -> torch.Tensor:
        """Target-space state of new users from their folded-in source state (and, for methods
        that read it, their source history): what ``transferred_state`` is for a known user."""
        return self.transfer_(source_state)

    def score_new_users(self, history: NewHistory, target: str, items: torch.Tensor
                        ) -> torch.Tensor:
        """A new user is treated as a cold-start test user: their source state is fitted from
        the history with the frozen source base (``serving.fold_in``), then transferred."""
        if target != self.domains_[1]:
            raise KeyError(f"{type(self).__name__} transfers into {self.domains_[1]!r}, "
                           f"not {target!r}")
        state = self.new_user_state(fold_in(self.source_, history), history)
        return self.target_.score_items(state, items)

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """As ``predict``: a user's own target state where they have target data, else the
        transferred one; one state per user, scored against every item at once."""
        self.check_fitted()
        items = torch.arange(n_items, device=users.device)
        if domain == self.domains_[0]:
            return self.source_.score_items(self.source_.user_state(users), items)
        if domain != self.domains_[1]:
            raise KeyError(f"{type(self).__name__} was fitted for {self.domains_}, "
                           f"not {domain!r}")
        state = torch.where(self.has_target_[users].unsqueeze(-1),
                            self.target_.user_state(users), self.transferred_state(users))
        return self.target_.score_items(state, items)

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


def ridge_mapping(source: torch.Tensor, target: torch.Tensor, alpha: float) -> nn.Linear:
    """The linear map ``f(u) = W u + b`` minimising
    ``(1/n) sum_u ||f(U^s_u) - U^t_u||^2 + alpha ||W||^2`` (EMCDR Eq. 3 with the linear f of
    Eq. 4, plus a ridge penalty; the bias is not penalised), in closed form (float64)."""
    x = source.double()
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
    n, d = x.shape
    penalty = torch.eye(d, dtype=x.dtype, device=x.device) * alpha
    penalty[-1, -1] = 0.0
    solution = torch.linalg.solve(x.T @ x / n + penalty, x.T @ target.double() / n)  # [d, out]
    # skip_init: the weights are overwritten, so no random initialisation is drawn.
    linear = nn.utils.skip_init(nn.Linear, d - 1, target.shape[1], device=source.device)
    with torch.no_grad():
        linear.weight.copy_(solution[:-1].T.float())
        linear.bias.copy_(solution[-1].float())
    return linear


def mapping_network(kind: str, dim_in: int, dim_out: int, hidden_factor: int = 2) -> nn.Module:
    """EMCDR's mapping: linear (Eq. 4) or MLP with one tanh hidden layer (Eq. 6)."""
    if kind == "linear":
        return nn.Linear(dim_in, dim_out)
    return MLP([dim_in, hidden_factor * dim_in, dim_out])
