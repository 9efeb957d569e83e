"""Embedding bases: the single-domain models that transfer methods pretrain, map and meta-learn.

A base is an ``nn.Module`` with a *user state* (the vector a cold-start method must produce for a
user, e.g. ``[p_u, b_u]`` for biased MF), a way to score items from any user state, and its own
training loss written on user states (``loss_with``). That last part is what makes TMCDR's
task-oriented meta network possible: the same loss is evaluated with ``f_theta(u_source)`` in place
of the learned target state (TMCDR, Eq. 1). Every base trains with the one loop in ``train.py``.

Batches: explicit feedback gives ``(users, items, ratings)``; implicit feedback gives
``(users, positives, negatives[B, n_neg])`` with negatives re-sampled every epoch, vectorised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cdrec.models.training import TrainingConfig
from cdrec.nn.losses import l2_penalty
from cdrec.nn.sparse import gather_rows


class BaseConfig(TrainingConfig):
    """Hyper-parameters shared by every embedding base and its training."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 4096, "lr": 0.02, "patience": 5}

    dim: int = Field(32, ge=1, description="embedding size of users and items")
    reg: float = Field(0.1, ge=0, description="L2 weight on the embedding rows of a batch")
    n_neg: int = Field(4, ge=1, description="sampled negatives per positive (implicit)")
    sparse: bool = Field(True, description=(
        "sparse gradients on the embedding rows a batch touches, stepped by a row-wise (lazy) "
        "Adam: a step costs the batch, not the tables (false: dense Adam over every row)"))
    holdout: float = Field(0.05, ge=0, lt=1, description=(
        "fraction of a domain's training interactions held out for early stopping when no "
        "validation users apply to that domain"))


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over rows, or the ``weight``-weighted mean (padding rows have weight 0)."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def init_table(n: int, dim: int, std: float, generator: torch.Generator | None,
               sparse: bool = False) -> nn.Embedding:
    table = nn.Embedding(n, dim, sparse=sparse)
    with torch.no_grad():
        table.weight.copy_(torch.randn(n, dim, generator=generator) * std)
    return table


class EmbeddingBase(nn.Module, ABC):
    """Interface of a base (see module docstring). Subclasses set ``Config`` and implement
    ``user_state``, ``score_with``, ``penalty`` and, where it differs from the default
    (squared error for ratings, sampled binary cross-entropy for implicit feedback), ``loss_with``.
    """

    Config: ClassVar[type[BaseConfig]] = BaseConfig
    implicit_only: ClassVar[bool] = False
    registered_base: ClassVar[str] = ""  # set by ``register_base``
    # A general base that every transfer method gets a variant over (EMCDR_<base>, ...); a
    # method's own pretrain model (MetaEM's) says False.
    transferable: ClassVar[bool] = True

    def __init__(self, n_users: int, n_items: int, config: BaseConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if self.implicit_only and not implicit:
            raise ValueError(f"{type(self).__name__} is a ranking model for implicit feedback; "
                             "use it with implicit: true")
        self.config, self.implicit = config, implicit
        self.n_users, self.n_items = n_users, n_items

    @property
    @abstractmethod
    def user_dim(self) -> int:
        """Size of the user state."""

    @abstractmethod
    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        """The learned state of ``users`` (``[B, user_dim]``)."""

    @abstractmethod
    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``items`` for user ``state``s: ``[B, D]`` with ``[B]``, or ``[B, 1, D]``
        with ``[B, n]``."""

    @abstractmethod
    def penalty(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        """L2 regulariser on the rows a batch touches (scaled per row of the batch)."""

    @abstractmethod
    def reset_users(self, users: torch.Tensor) -> None:
        """Put ``users`` at the prior (zero state): for users without data in this domain, so
        they score as the item-side floor rather than as random noise."""

    def loss_with(self, state: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        """The base's own objective on a batch, with user states given (TMCDR's L_task)."""
        pos = self.score_with(state, items)
        if not self.implicit:
            return weighted_mean((pos - target).pow(2), weight)
        neg = self.score_with(state.unsqueeze(-2), target)
        loss = F.softplus(-pos) + F.softplus(neg).sum(-1)  # BCE: label 1 / 0
        return weighted_mean(loss, weight)

    def after_step(self) -> None:
        """Hook after each optimiser step (e.g. CML's projection onto the unit ball)."""

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``[U, n]`` of the same ``items`` ``[n]`` for each user state ``[U, D]``: what
        serving needs (every item for a block of users). Bases whose score is an inner product
        override it with one matrix product."""
        return self.score_with(state.unsqueeze(1), items.expand(state.shape[0], -1))

    def constrain_state(self, state: torch.Tensor) -> torch.Tensor:
        """A user state brought into the set the base keeps its users in (CML: the unit ball);
        used when a new user's state is fitted outside the tables (``serving.fold_in``)."""
        return state

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_with(self.user_state(users), items)

    def training_loss(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                      ) -> torch.Tensor:
        return (self.loss_with(self.user_state(users), items, target)
                + self.config.reg * self.penalty(users, items, target))


class FactorBase(EmbeddingBase):
    """A base whose users and items are rows of two embedding tables (every base so far).

    Defaults: the user state is the user's row; the penalty is the L2 norm of the rows a batch
    touches (negatives scaled by 1/sqrt(n_neg), so the weight per positive does not grow with
    n_neg) plus whatever ``extra_penalty_rows`` adds (biases); ``reset_users`` zeroes rows.
    ``user_factors`` may be passed in to share one user table across domains (CMF).
    """

    def __init__(self, n_users: int, n_items: int, config: BaseConfig, *, implicit: bool,
                 generator: torch.Generator | None = None, init_std: float = 0.1,
                 user_factors: nn.Embedding | None = None) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator)
        width = self.row_width(config)
        self.user_factors = user_factors or init_table(n_users, width, init_std, generator,
                                                       sparse=config.sparse)
        self.item_factors = init_table(n_items, width, init_std, generator,
                                       sparse=config.sparse)

    @classmethod
    def row_width(cls, config: BaseConfig) -> int:
        """Width of a row of the user and item tables: ``dim`` (NeuMF's rows hold its GMF and
        MLP embeddings side by side)."""
        return config.dim

    def rows(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``table[index]`` for a per-row parameter (a bias vector): sparse-gradient when the
        base trains sparsely."""
        return gather_rows(table, index, sparse=self.config.sparse)

    def bias_rows(self) -> list[nn.Parameter]:
        """The per-row bias vectors a subclass reads with :meth:`rows`."""
        return []

    def sparse_rows(self) -> list[torch.Tensor]:
        """Parameters that get sparse gradients when ``sparse``: the factor tables and the
        per-row biases (``cdrec.models.training.sparse_parameters`` collects them)."""
        if not self.config.sparse:
            return []
        tables = [self.user_factors.weight, self.item_factors.weight, *self.bias_rows()]
        return [p for p in tables if p.requires_grad]

    @property
    def user_dim(self) -> int:
        return self.row_width(self.config)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """The item embeddings the base scores with (rows of ``item_factors``; LightGCN's
        propagated ones): what a transfer method reading item vectors (PTUPCDR, SSCDR) uses."""
        return self.item_factors(items)

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors(users)

    def extra_penalty_rows(self, users: torch.Tensor, items: torch.Tensor
                           ) -> list[torch.Tensor]:
        return []

    def penalty(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        rows = [self.user_factors(users), self.item_factors(items)]
        if self.implicit:
            rows.append(self.item_factors(target).flatten(0, 1) / target.shape[1] ** 0.5)
        return l2_penalty(*rows, *self.extra_penalty_rows(users, items))

    def reset_users(self, users: torch.Tensor) -> None:
        with torch.no_grad():
            self.user_factors.weight[users] = 0.0
