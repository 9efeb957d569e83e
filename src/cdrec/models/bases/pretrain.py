"""Pretraining a base on one domain of the train view: the model that transfer methods (EMCDR,
TMCDR, PTUPCDR, ...) share, trained with the one loop in ``cdrec.train``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, runtime_checkable

import torch

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys
from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.cache import BaseCache
from cdrec.models.bases.holdout import holdout_validator
from cdrec.models.bases.interface import BaseConfig, EmbeddingBase
from cdrec.models.bases.registry import base_class
from cdrec.models.model_file import derived_buffers
from cdrec.models.training import fit_stage
from cdrec.split import TrainView
from cdrec.train import FitContext, StageResult, Validate


@runtime_checkable
class GraphBase(Protocol):
    """A base whose scores propagate over its domain's interaction graph (LightGCN): it is
    given the interactions it trains on before training (:func:`fit_base`) and keeps the graph
    in non-persistent buffers, which a saved model file and ``BaseCache`` keep with it."""

    def set_graph(self, interactions: Interactions) -> None: ...


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
        validate = holdout_validator(base, held, n_items, observed, context)
    base.to(context.device)
    if isinstance(base, GraphBase):  # the graph of the rows it trains on (held-out ones not)
        base.set_graph(train_rows)
    return fit_stage(base, lambda batch: base.training_loss(*batch),
                     epoch_batches(train_rows, n_items, base.implicit, config.n_neg, observed),
                     config, context=context, stage=stage, validate=validate,
                     after_step=base.after_step)


def pretrain_base(train: TrainView, domain: str, name: str, config: BaseConfig,
                  context: FitContext, validate: Validate | None = None,
                  base: EmbeddingBase | None = None) -> EmbeddingBase:
    """Fit base ``name`` on one domain of the train view: the pretrained model that transfer
    methods (EMCDR, TMCDR, PTUPCDR, ...) share. Users without data there keep the prior.

    Pass ``base`` (from :func:`new_base`) when ``validate`` must see it while it trains.
    With ``context.base_cache`` set, a base already pretrained the same way is reused exactly.
    """
    cache = context.base_cache if (validate is None and base is None) else None
    key = (BaseCache.key(train, domain, name, config, context) if cache is not None
           else None)
    base = base if base is not None else new_base(train, domain, name, config, context)
    # Users with no data here keep the prior (zero); their rows get no gradient, so they stay.
    base.reset_users(users_without_data(train, domain))
    dom = train.data[domain]
    cached_stage(base, key, context,
                 lambda: fit_base(base, dom.interactions, dom.n_items, context=context,
                                  stage=f"base_{domain}", validate=validate),
                 keep_alive=dom.interactions)  # keeps the keyed id alive
    return base


def cached_stage(base: EmbeddingBase, key: tuple | None, context: FitContext,
                 fit: Callable[[], StageResult], *, keep_alive: object) -> StageResult:
    """Run ``fit`` (the stage that trains ``base``) through ``context.base_cache``: on a hit
    under ``key`` the stored weights, generator states, stage result and history rows are
    restored instead, so the fit gives the numbers it would have trained to; on a miss they are
    stored. ``keep_alive`` holds the objects whose ``id`` is in the key (their ids must not be
    reused while the entry lives). Without a cache or a key, ``fit()``."""
    cache = context.base_cache
    if cache is None or key is None:
        return fit()
    entry = cache.get(key)
    if entry is not None:
        base.load_state_dict(entry["state"])
        for full, value in entry["derived"].items():  # a graph base's adjacency
            owner, _, leaf = full.rpartition(".")
            base.get_submodule(owner).register_buffer(leaf, value, persistent=False)
        base.to(context.device)
        context.generator.set_state(entry["generator"])
        torch.set_rng_state(entry["torch_rng"])
        stage = replace(entry["stage"])
        context.stages.append(stage)
        context.history.extend({**h, "label": context.label} for h in entry["history"])
        return stage
    n_history = len(context.history)
    stage = fit()
    cache.put(key, {
        "state": {k: v.detach().clone() for k, v in base.state_dict().items()},
        "derived": derived_buffers(base)[0],  # non-persistent buffers (a graph), CPU copies
        "generator": context.generator.get_state(), "torch_rng": torch.get_rng_state(),
        "stage": replace(stage), "history": list(context.history[n_history:]),
        "keep_alive": keep_alive})
    return stage
