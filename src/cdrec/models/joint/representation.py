"""The representation stage of DML and DDTCDR: every user and item of a domain gets a fixed
embedding from an autoencoder over its feature vector (DML Sec. 3.1, Eq. 2).

Feature vectors, per domain and entity (``features`` setting):

* ``table``: the domain's user or item feature table (``Domain.user_features`` /
  ``item_features``, one-hot categorical and standardised numeric columns);
* ``interactions``: the entity's interaction vector in its domain, from the training ratings only
  (a user's row over the domain's items, an item's column over the users), each rating centred
  on the domain's mean training rating and divided by the width of the scale, so a liked item is
  positive, a disliked one negative and an unrated one 0 (cdrec's reading of "feature vector"
  for data without features; implicit feedback is 1). Its autoencoder weighs a rated entry
  ``observed_weight`` times an unrated one in Eq. 2: with plain MSE over a vector that is >99%
  zeros the autoencoder learns to output zeros and its codes carry next to nothing (on Douban
  Book, fold 0, 20 epochs: the item codes had rank 9 of 16 and explained R² = 0.006 of the item
  mean rating by a linear fit; centred values with weight 50: rank 15, R² = 0.52);
* ``auto``: ``table`` where the domain has that table, else ``interactions``;
* ``ids``: no feature vector; the model learns the embeddings from ids (DML Table 9).

Autoencoders are trained separately for users and items of each domain ("to avoid the
information leak between domains"); their embeddings lie in the unit ball.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from cdrec.data.dataset import Domain
from cdrec.data.sampling import pair_keys
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.nn.autoencoder import FeatureAutoencoder, SparseRows
from cdrec.train import FitContext

FeatureSource = Literal["auto", "table", "interactions", "ids"]
Entity = Literal["user", "item"]


class AutoencoderConfig(TrainingConfig):
    """How the representation stage trains (DML Sec. 5.4: encoder and decoder MLPs with hidden
    layers of 32 and 16 units, embedding size 16, batch 64)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 20, "batch_size": 64, "lr": 1e-3}
    hidden: list[int] = Field(default_factory=lambda: [32, 16], description=(
        "hidden layer sizes of the encoder (the decoder mirrors them)"))
    kind: Literal["ae", "vae"] = Field("ae", description=(
        "autoencoder: plain (the paper's default) or variational (Table 11)"))
    kl_weight: float = Field(1.0, ge=0, description="weight of the VAE's KL term")
    observed_weight: float = Field(50.0, gt=0, description=(
        "weight of a rated entry of an interaction vector in the reconstruction loss (an "
        "unrated entry weighs 1; feature tables weigh every entry 1): see the module docstring"))


def interaction_features(dom: Domain, n_users: int, entity: Entity) -> SparseRows:
    """Each user's (``entity="user"``, ``[n_users, n_items]``) or item's (``[n_items, n_users]``)
    interaction vector from ``dom``'s interactions: ``(r - mean) / (top - bottom)`` with the
    domain's mean rating (module docstring); duplicate rows of a pair are averaged. Implicit
    feedback is 1. Every rated pair is a stored entry, even where its value is 0."""
    inter = dom.interactions
    keys, inverse = torch.unique(pair_keys(inter.user, inter.item, dom.n_items),
                                 return_inverse=True)
    total = torch.zeros(keys.numel()).index_add_(0, inverse, inter.rating.float())
    count = torch.zeros(keys.numel()).index_add_(0, inverse, torch.ones(len(inter)))
    value = total / count
    if dom.rating_scale is None:
        value = torch.ones_like(value)
    else:
        bottom, top = map(float, dom.rating_scale)
        value = (value - inter.rating.float().mean()) / (top - bottom)
    user, item = keys // dom.n_items, keys % dom.n_items
    row, column, shape = ((user, item, (n_users, dom.n_items)) if entity == "user"
                          else (item, user, (dom.n_items, n_users)))
    return SparseRows(row, column, value, shape)


def table_features(dom: Domain, entity: Entity) -> SparseRows | None:
    """``dom``'s user or item feature table as sparse rows, or ``None`` when it has none."""
    table = dom.user_features if entity == "user" else dom.item_features
    return None if table is None else SparseRows.from_dense(table.values.float())


def entity_features(dom: Domain, n_users: int, entity: Entity, source: FeatureSource
                    ) -> tuple[SparseRows, bool] | None:
    """The feature vectors the representation stage encodes (see the module docstring) and
    whether they are interaction vectors; ``None`` for ``source="ids"``."""
    if source == "ids":
        return None
    if source in ("table", "auto"):
        table = table_features(dom, entity)
        if table is not None:
            return table, False
        if source == "table":
            raise ValueError(f"features: table, but domain {dom.name!r} has no {entity} feature "
                             "table; give one in the data config or use features: auto")
    return interaction_features(dom, n_users, entity), True


def fit_embeddings(features: SparseRows, dim: int, cfg: AutoencoderConfig, *,
                   context: FitContext, stage: str, observed_weight: float = 1.0
                   ) -> torch.Tensor:
    """Train an autoencoder on ``features``' nonempty rows (Eq. 2; a stored entry weighs
    ``observed_weight``, an absent one 1) and return every row's embedding ``[n_rows, dim]``
    (empty rows are encoded from the zero vector)."""
    device = context.device
    ae = FeatureAutoencoder(features.n_columns, list(cfg.hidden), dim,
                            variational=cfg.kind == "vae", kl_weight=cfg.kl_weight).to(device)
    rows = features.nonempty()
    if rows.numel() == 0:
        raise ValueError(f"{stage}: every feature vector is empty")

    def loss(batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features.dense(batch[0], device)
        if observed_weight == 1.0:
            return ae.loss(x)
        stored = features.dense(batch[0], device, pattern=True)
        return ae.loss(x, 1.0 + (observed_weight - 1.0) * stored)

    fit_stage(ae, loss, lambda gen: [rows], cfg, context=context, stage=stage)
    with torch.no_grad():
        chunks = [ae.encode(features.dense(part, device))
                  for part in torch.arange(features.n_rows).split(4096)]
    return torch.cat(chunks)
