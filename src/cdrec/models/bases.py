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

from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys, sample_negatives
from cdrec.models.base import ModelConfig, Recommender, validation_for, validator
from cdrec.nn.losses import l2_penalty
from cdrec.scenarios.base import Evaluator, TrainView
from cdrec.train import FitContext, StageResult, train_loop

Validate = Callable[[], tuple[float, str, bool]]


class BaseConfig(ModelConfig):
    """Hyper-parameters shared by every embedding base and its training."""

    dim: int = Field(32, ge=1, description="embedding size of users and items")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(4096, ge=1)
    lr: float = Field(0.02, gt=0)
    reg: float = Field(0.1, ge=0, description="L2 weight on the embedding rows of a batch")
    n_neg: int = Field(4, ge=1, description="sampled negatives per positive (implicit)")
    patience: int = Field(5, ge=1)
    holdout: float = Field(0.05, ge=0, lt=1, description=(
        "fraction of a domain's training interactions held out for early stopping when no "
        "validation users apply to that domain"))


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over rows, or the ``weight``-weighted mean (padding rows have weight 0)."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def init_table(n: int, dim: int, std: float, generator: torch.Generator | None) -> nn.Embedding:
    table = nn.Embedding(n, dim)
    with torch.no_grad():
        table.weight.copy_(torch.randn(n, dim, generator=generator) * std)
    return table


class EmbeddingBase(nn.Module):
    """Interface of a base (see module docstring). Subclasses set ``Config`` and implement
    ``user_state``, ``score_with``, ``penalty`` and, where it differs from the default
    (squared error for ratings, sampled binary cross-entropy for implicit feedback), ``loss_with``.
    """

    Config: ClassVar[type[BaseConfig]] = BaseConfig
    implicit_only: ClassVar[bool] = False

    def __init__(self, n_users: int, n_items: int, config: BaseConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if self.implicit_only and not implicit:
            raise ValueError(f"{type(self).__name__} is a ranking model for implicit feedback; "
                             "use it with implicit: true")
        self.config, self.implicit = config, implicit
        self.n_users, self.n_items = n_users, n_items

    @property
    def user_dim(self) -> int:
        raise NotImplementedError  # abstract

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``items`` for user ``state``s: ``[B, D]`` with ``[B]``, or ``[B, 1, D]``
        with ``[B, n]``."""
        raise NotImplementedError  # abstract

    def penalty(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        """L2 regulariser on the rows a batch touches (scaled per row of the batch)."""
        raise NotImplementedError  # abstract

    def reset_users(self, users: torch.Tensor) -> None:
        """Put ``users`` at the prior (zero state): for users without data in this domain, so
        they score as the item-side floor rather than as random noise."""
        raise NotImplementedError  # abstract

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
        self.user_factors = user_factors or init_table(n_users, config.dim, init_std, generator)
        self.item_factors = init_table(n_items, config.dim, init_std, generator)

    @property
    def user_dim(self) -> int:
        return self.config.dim

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


BASES: dict[str, type[EmbeddingBase]] = {}


def register_base(name: str):
    def deco(cls: type[EmbeddingBase]) -> type[EmbeddingBase]:
        BASES[name] = cls
        return cls

    return deco


def base_class(name: str) -> type[EmbeddingBase]:
    import cdrec.models  # noqa: F401  (registers every base)

    if name not in BASES:
        raise KeyError(f"unknown base model {name!r}; available: {', '.join(sorted(BASES))}")
    return BASES[name]


def new_base(train: TrainView, domain: str, name: str, config: BaseConfig,
             context: FitContext, **kwargs: object) -> EmbeddingBase:
    """A base sized for ``domain`` of the train view, its global mean taken from the data."""
    dom = train.data[domain]
    mean = 0.0 if train.implicit else float(dom.interactions.rating.mean())
    return base_class(name)(train.data.n_users, dom.n_items, config, implicit=train.implicit,
                            global_mean=mean, generator=context.generator, **kwargs)


def users_without_data(train: TrainView, domain: str) -> torch.Tensor:
    """Users of the shared space with no interaction in ``domain`` of the train view."""
    present = torch.zeros(train.data.n_users, dtype=torch.bool)
    present[train.data[domain].interactions.user] = True
    return (~present).nonzero().squeeze(1)


def epoch_batches(interactions: Interactions, n_items: int, implicit: bool, n_neg: int,
                  observed: torch.Tensor | None = None
                  ) -> Callable[[torch.Generator], list[torch.Tensor]]:
    """The ``epoch_data`` callback of the loop: fixed ratings, or fresh negatives each epoch."""
    if not implicit:
        return lambda gen: [interactions.user, interactions.item, interactions.rating]
    if observed is None:
        observed = observed_keys(interactions.user, interactions.item, n_items)

    def draw(gen: torch.Generator) -> list[torch.Tensor]:
        users = interactions.user.repeat_interleave(n_neg)
        neg = sample_negatives(users, n_items, observed, gen).view(-1, n_neg)
        return [interactions.user, interactions.item, neg]

    return draw


def fit_base(base: EmbeddingBase, interactions: Interactions, n_items: int, *,
             context: FitContext, stage: str, validate: Validate | None = None) -> StageResult:
    """Train one base on one domain's interactions with the shared loop.

    Without ``validate``, ``config.holdout`` of the interactions is held out and the base's loss
    on it drives early stopping (training data only, never evaluation users).
    """
    config = base.config
    train_rows = interactions
    observed = observed_keys(interactions.user, interactions.item, n_items)
    if validate is None and config.holdout > 0 and len(interactions) >= 20:
        perm = torch.randperm(len(interactions), generator=context.generator)
        n_hold = max(1, int(config.holdout * len(interactions)))
        held, train_rows = interactions.select(perm[:n_hold]), interactions.select(perm[n_hold:])
        validate = _holdout_validator(base, held, n_items, observed, context)
    base.to(context.device)
    return train_loop(base, lambda batch: base.training_loss(*batch),
                      epoch_batches(train_rows, n_items, base.implicit, config.n_neg, observed),
                      context=context, stage=stage, epochs=config.epochs,
                      batch_size=config.batch_size, lr=config.lr, validate=validate,
                      patience=config.patience, after_step=base.after_step)


def _holdout_validator(base: EmbeddingBase, held: Interactions, n_items: int,
                       observed: torch.Tensor, context: FitContext) -> Validate:
    device = context.device
    u, i, r = held.user.to(device), held.item.to(device), held.rating.to(device)
    if base.implicit:
        # Fixed negatives for the held-out pairs: the same yardstick every epoch.
        neg = sample_negatives(held.user.repeat_interleave(base.config.n_neg), n_items, observed,
                               context.generator).view(-1, base.config.n_neg).to(device)

        def validate() -> tuple[float, str, bool]:
            with torch.no_grad():
                return float(base.loss_with(base.user_state(u), i, neg)), "holdout_loss", False
    else:
        def validate() -> tuple[float, str, bool]:
            with torch.no_grad():
                return float((base(u, i) - r).pow(2).mean().sqrt()), "holdout_rmse", False
    return validate


class BaseCache:
    """Pretrained bases shared by the fits of one split (``FitContext.base_cache``).

    Transfer methods in one run (EMCDR, TMCDR, PTUPCDR, DCDCSR, ... over the same base) and the
    trials of a search over their own stage pretrain identical bases. A hit is exact: the key
    holds the domain's interactions (by identity, kept alive), the base and its settings, the
    device, and the states of the context generator and of torch's global generator before
    pretraining; the entry restores both states to what they were after it, so a fit that hits
    gives the same numbers as one that trains. Least recently used entries go beyond
    ``max_entries``.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple, dict] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(train: TrainView, domain: str, name: str, config: BaseConfig,
            context: FitContext) -> tuple:
        interactions = train.data[domain].interactions
        return (id(interactions), domain, name, config.model_dump_json(), str(context.device),
                context.generator.get_state().numpy().tobytes(),
                torch.get_rng_state().numpy().tobytes())

    def get(self, key: tuple) -> dict | None:
        entry = self.entries.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        self.entries[key] = entry  # most recent last
        self.hits += 1
        return entry

    def put(self, key: tuple, entry: dict) -> None:
        self.entries[key] = entry
        while len(self.entries) > self.max_entries:
            self.entries.pop(next(iter(self.entries)))


def pretrain_base(train: TrainView, domain: str, name: str, config: BaseConfig,
                  context: FitContext, validate: Validate | None = None,
                  base: EmbeddingBase | None = None) -> EmbeddingBase:
    """Fit base ``name`` on one domain of the train view: the pretrained model that transfer
    methods (EMCDR, TMCDR, PTUPCDR, ...) share. Users without data there keep the prior.

    Pass ``base`` (from :func:`new_base`) when ``validate`` must see it while it trains.
    With ``context.base_cache`` set, a base already pretrained the same way is reused exactly.
    """
    cache = context.base_cache if (validate is None and base is None) else None
    key = BaseCache.key(train, domain, name, config, context) if cache is not None else None
    entry = cache.get(key) if cache is not None else None
    base = base if base is not None else new_base(train, domain, name, config, context)
    if entry is not None:
        base.load_state_dict(entry["state"])
        base.to(context.device)
        context.generator.set_state(entry["generator"])
        torch.set_rng_state(entry["torch_rng"])
        context.stages.append(replace(entry["stage"]))
        context.history.extend({**h, "label": context.label} for h in entry["history"])
        return base
    # Users with no data here keep the prior (zero); their rows get no gradient, so they stay.
    base.reset_users(users_without_data(train, domain))
    dom = train.data[domain]
    n_history = len(context.history)
    stage = fit_base(base, dom.interactions, dom.n_items, context=context,
                     stage=f"base_{domain}", validate=validate)
    if cache is not None:
        cache.put(key, {
            "state": {k: v.detach().clone() for k, v in base.state_dict().items()},
            "generator": context.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "stage": replace(stage), "history": list(context.history[n_history:]),
            "interactions": train.data[domain].interactions})  # keeps the keyed id alive
    return base


def merged_target_view(train: TrainView) -> TrainView:
    """The cold-start train view as ONE domain: target items first (their indices unchanged),
    then the source items, with one user table; TMCDR's single-domain baselines "consider both
    source and target domains as a single domain" (TMCDR Sec. 3.1, Baselines)."""
    source, target = train.data[train.source], train.data[train.target]
    src = source.interactions
    shifted = Interactions(src.user, src.item + target.n_items, src.rating, src.timestamp)
    merged = target.with_interactions(target.interactions.concat(shifted))
    merged = replace(merged, item_ids=np.concatenate([target.item_ids.astype(object),
                                                      source.item_ids.astype(object)]))
    return TrainView(train.data.replace_domains({train.target: merged}), train.scenario,
                     None, train.target, train.implicit)


class SingleDomain(Recommender):
    """A base trained on each domain separately, no transfer.

    In the cold-start scenario the source and target are merged into one domain (see
    :func:`merged_target_view`), as TMCDR's single-domain baselines are, so a cold user's
    embedding is learned from their source interactions; TGT (``merge_in_coldstart = False``)
    trains on the target alone, the floor.
    """

    base_name: ClassVar[str] = ""
    merge_in_coldstart: ClassVar[bool] = True
    supports = frozenset({"coldstart", "kfold_rating", "leave_one_out"})

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.base_name:
            cls.Config = BASES[cls.base_name].Config

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        domains = train.domains
        if train.scenario == "coldstart":
            domains = [train.target]  # the source is never evaluated
            if self.merge_in_coldstart:
                train = merged_target_view(train)
        self.models = nn.ModuleDict()
        for domain in domains:
            # Registered before training so validation can call predict on it.
            self.models[domain] = new_base(train, domain, self.base_name, self.config, context)
            pretrain_base(train, domain, self.base_name, self.config, context,
                          base=self.models[domain],
                          validate=validator(self, validation_for(validation, domain)))

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"{type(self).__name__} was fitted on {list(self.models)}, "
                           f"not {domain!r}")
        return self.models[domain](users, items)
