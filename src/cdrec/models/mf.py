"""Matrix factorisation, the base embedding model the transfer methods build on.

Explicit feedback: biased MF with squared error (Koren, Bell, Volinsky, "Matrix Factorization
Techniques for Recommender Systems", 2009, Eq. 5). Implicit feedback: the same factors trained with
the BPR loss (Rendle et al., UAI 2009) over sampled unobserved items.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys, sample_negatives
from cdrec.models.base import ModelConfig, Recommender, register, validation_for, validator
from cdrec.nn import BiasedMF, bpr_loss, l2_penalty
from cdrec.scenarios.base import Evaluator, TrainView
from cdrec.train import FitContext, StageResult, train_loop


class MFConfig(ModelConfig):
    """Hyper-parameters of one factor model and its training."""

    dim: int = Field(32, ge=1, description="latent factors per user and item")
    use_bias: bool = Field(True, description="global, user and item biases (False: plain p.q)")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(4096, ge=1)
    lr: float = Field(0.02, gt=0)
    reg: float = Field(0.1, ge=0, description="L2 weight on the factor/bias rows of a batch")
    n_neg: int = Field(4, ge=1, description="sampled negatives per positive (implicit)")
    patience: int = Field(5, ge=1)
    holdout: float = Field(0.05, ge=0, lt=1, description=(
        "fraction of a domain's training interactions held out for early stopping when no "
        "validation users apply to that domain"))


def fit_factor_model(mf: BiasedMF, interactions: Interactions, n_items: int, *, implicit: bool,
                     config: MFConfig, context: FitContext, stage: str,
                     validate: Callable[[], tuple[float, str, bool]] | None = None
                     ) -> StageResult:
    """Train one ``BiasedMF`` on one domain's interactions with the shared loop.

    Without a ``validate`` callback, ``config.holdout`` of the interactions is held out and the
    loss on it drives early stopping (training data only, never evaluation users).
    """
    train_rows = interactions
    if validate is None and config.holdout > 0 and len(interactions) >= 20:
        perm = torch.randperm(len(interactions), generator=context.generator)
        n_hold = max(1, int(config.holdout * len(interactions)))
        held, train_rows = interactions.select(perm[:n_hold]), interactions.select(perm[n_hold:])
        validate = _holdout_validator(mf, held, n_items, implicit, context)
    device = context.device
    if implicit:
        observed = observed_keys(interactions.user, interactions.item, n_items)

        def epoch_data(gen: torch.Generator) -> list[torch.Tensor]:
            users = train_rows.user.repeat_interleave(config.n_neg)
            neg = sample_negatives(users, n_items, observed, gen).view(-1, config.n_neg)
            return [train_rows.user, train_rows.item, neg]

    else:
        def epoch_data(gen: torch.Generator) -> list[torch.Tensor]:
            return [train_rows.user, train_rows.item, train_rows.rating]

    def loss_fn(batch: list[torch.Tensor]) -> torch.Tensor:
        return factor_loss(mf, *batch, implicit=implicit, reg=config.reg)

    mf.to(device)
    return train_loop(mf, loss_fn, epoch_data, context=context, stage=stage,
                      epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                      validate=validate, patience=config.patience)


def factor_loss(mf: BiasedMF, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                *, implicit: bool, reg: float) -> torch.Tensor:
    """The base objective on a batch, plus ``reg`` times the L2 norm of the rows it touches.

    Explicit: ``target`` holds ratings, squared error (Koren et al. 2009, Eq. 5). Implicit:
    ``target`` holds [B, n_neg] sampled negatives, BPR (Rendle et al. 2009, Eq. 7); each
    negative's penalty is scaled by 1/sqrt(n_neg) so the weight per positive does not grow with it.
    """
    p = mf.user_factors(users)
    pred = mf.score_with(p, mf.user_bias[users], items)
    if implicit:
        neg = mf.score_with(p.unsqueeze(1), mf.user_bias[users].unsqueeze(1), target)
        return bpr_loss(pred, neg) + reg * l2_penalty(
            p, mf.item_factors(items), mf.item_factors(target).flatten(0, 1) / target.shape[1]**0.5)
    return (pred - target).pow(2).mean() + reg * l2_penalty(
        p, mf.item_factors(items), mf.user_bias[users], mf.item_bias[items])


def _holdout_validator(mf: BiasedMF, held: Interactions, n_items: int, implicit: bool,
                       context: FitContext) -> Callable[[], tuple[float, str, bool]]:
    device = context.device
    u, i, r = held.user.to(device), held.item.to(device), held.rating.to(device)
    if implicit:
        # Fixed negatives for the held-out pairs: a stable yardstick across epochs.
        keys = observed_keys(held.user, held.item, n_items)
        j = sample_negatives(held.user, n_items, keys, context.generator).to(device)

        def validate() -> tuple[float, str, bool]:
            with torch.no_grad():
                return float(bpr_loss(mf(u, i), mf(u, j))), "holdout_bpr", False
    else:
        def validate() -> tuple[float, str, bool]:
            with torch.no_grad():
                return float((mf(u, i) - r).pow(2).mean().sqrt()), "holdout_rmse", False
    return validate


def new_factor_model(train: TrainView, domain: str, config: MFConfig, context: FitContext,
                     user_factors: nn.Embedding | None = None) -> BiasedMF:
    """A ``BiasedMF`` sized for ``domain`` of the train view, its global mean set from the data."""
    dom = train.data[domain]
    mean = 0.0 if train.implicit else float(dom.interactions.rating.mean())
    return BiasedMF(train.data.n_users, dom.n_items, config.dim, use_bias=config.use_bias,
                    global_mean=mean, user_factors=user_factors, generator=context.generator)


def users_without_data(train: TrainView, domain: str) -> torch.Tensor:
    """Users of the shared space with no interaction in ``domain`` of the train view."""
    present = torch.zeros(train.data.n_users, dtype=torch.bool)
    present[train.data[domain].interactions.user] = True
    return (~present).nonzero().squeeze(1)


def pretrain_base(train: TrainView, domain: str, config: MFConfig, context: FitContext,
                  validate: Callable[[], tuple[float, str, bool]] | None = None,
                  mf: BiasedMF | None = None) -> BiasedMF:
    """Fit a factor model on one domain of the train view: the pretrained base that transfer
    methods (EMCDR, TMCDR, PTUPCDR, ...) share. Users without data in the domain keep the prior.

    Pass ``mf`` (from :func:`new_factor_model`) when ``validate`` must see it while it trains.
    """
    mf = mf if mf is not None else new_factor_model(train, domain, config, context)
    # Users with no data here keep the prior (zero) so they score as the item-side floor;
    # their rows get no gradient, so they stay zero through training.
    mf.reset_users(users_without_data(train, domain))
    dom = train.data[domain]
    fit_factor_model(mf, dom.interactions, dom.n_items, implicit=train.implicit, config=config,
                     context=context, stage=f"base_{domain}", validate=validate)
    return mf


@register("MF")
class MF(Recommender):
    """One independent factor model per domain (no transfer): the single-domain base."""

    Config = MFConfig
    supports = frozenset({"coldstart", "kfold_rating", "leave_one_out"})

    def _domains(self, train: TrainView) -> list[str]:
        return train.domains

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        self.models = nn.ModuleDict()
        for domain in self._domains(train):
            # Registered before training so validation can call predict on it.
            self.models[domain] = new_factor_model(train, domain, self.config, context)
            pretrain_base(train, domain, self.config, context, mf=self.models[domain],
                          validate=validator(self, validation_for(validation, domain)))

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"{type(self).__name__} was fitted on {list(self.models)}, not {domain!r}")
        return self.models[domain](users, items)


@register("TGT")
class TGT(MF):
    """MF trained on the target domain only: cold-start users get the item-side prediction
    (their factors are the prior, zero), the floor every transfer method must beat."""

    supports = frozenset({"coldstart"})

    def _domains(self, train: TrainView) -> list[str]:
        return [train.target]
