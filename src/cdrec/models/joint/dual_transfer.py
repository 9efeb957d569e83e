"""The pieces DML and DDTCDR share (Li and Tuzhilin): per-domain embeddings of users and items
from the representation stage (:mod:`cdrec.models.joint.representation`), per-domain rating
networks ``RS_d`` over ``[W_u; W_i]``, orthogonal maps ``X`` between adjacent domains of a chain
(:mod:`cdrec.nn.orthogonal`), the in-domain, mapping and cross losses, and the predictions
``RS_d(W_ud, W_id)`` on the original rating scale. DML's module docstring says where the paper
is ambiguous and what is chosen.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch
from pydantic import Field
from torch import nn

from cdrec.models.joint.representation import (
    AutoencoderConfig,
    Entity,
    FeatureSource,
    entity_features,
    fit_embeddings,
)
from cdrec.models.recommender import Recommender
from cdrec.models.training import TrainingConfig
from cdrec.nn.autoencoder import unit_ball
from cdrec.nn.layers import MLP
from cdrec.nn.orthogonal import OrthogonalMap, chain
from cdrec.split import TrainView
from cdrec.train import FitContext


class DualTransferConfig(TrainingConfig):
    """Settings DML and DDTCDR share: the embeddings, the representation stage and ``RS_d``."""

    dim: int = Field(16, ge=1, description="embedding size k (DML Sec. 5.4: 16)")
    features: FeatureSource = Field("auto", description=(
        "feature vectors of the representation stage: a feature table, interaction vectors, "
        "auto (table where present), or ids (embeddings learned from ids, DML Table 9)"))
    autoencoder: AutoencoderConfig = Field(
        default_factory=lambda: AutoencoderConfig.model_validate({}))
    recommender: Literal["mlp", "attention"] = Field("mlp", description=(
        "RS_d: an MLP over [W_u; W_i] (the paper's), or self-attention over the two (Table 10)"))
    hidden: list[int] = Field(default_factory=lambda: [64, 32], description=(
        "hidden layers of RS_d (not given in the paper; cdrec's choice)"))
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout in RS_d (DML Sec. 3.4)")
    chain: list[str] | None = Field(None, description=(
        "order of the domains along the chain of maps X_12, X_23, ... (default: the train "
        "view's order)"))


class RatingNetwork(nn.Module):
    """``RS_d``: a normalised rating in (0, 1) from a user and an item embedding."""

    def __init__(self, dim: int, hidden: Sequence[int], dropout: float, kind: str) -> None:
        super().__init__()
        self.attention = (nn.MultiheadAttention(dim, num_heads=1, batch_first=True)
                          if kind == "attention" else None)
        self.mlp = MLP([2 * dim, *hidden, 1], activation=nn.ReLU, dropout=dropout)
        if dropout:  # dropout on the input pair too: "an MLP network with dropout"
            self.mlp.insert(0, nn.Dropout(dropout))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            tokens = torch.stack([user, item], dim=1)  # [batch, 2, dim]
            attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
            tokens = tokens + attended
            user, item = tokens[:, 0], tokens[:, 1]
        return torch.sigmoid(self.mlp(torch.cat([user, item], dim=1)).squeeze(1))


class EmbeddingTable(nn.Module):
    """One domain's user or item embeddings: fixed (from the representation stage) or learned
    from ids, read inside the unit ball."""

    def __init__(self, n_rows: int, dim: int, *, trainable: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_rows, dim), requires_grad=trainable)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return unit_ball(self.weight[index])


class DualTransfer(Recommender):
    """What DML and DDTCDR share: per-domain user and item embeddings (fixed from the
    representation stage, or learned from ids), per-domain rating networks ``RS_d``, orthogonal
    maps along the chain of domains, and their losses. Subclasses give ``_fit``."""

    Config = DualTransferConfig
    config: DualTransferConfig
    supports = frozenset({"kfold_rating"})
    domains_: list[str]
    scales_: dict[str, list[float]]
    _trained_users: dict[str, torch.Tensor]

    @property
    @abstractmethod
    def cross_form(self) -> str:
        """How the cross term feeds a mapped user embedding to a recommender: ``eq56``,
        ``algorithm1`` or ``transfer`` (DML's ``cross`` setting, its module docstring)."""

    # -- modules -----------------------------------------------------------------------------

    def _build(self, architecture: Mapping[str, Any]) -> None:
        cfg = self.config
        self.domains_ = list(architecture["domains"])
        self.scales_ = {d: list(s) for d, s in architecture["scales"].items()}
        learned = cfg.features == "ids"
        n_users = int(architecture["n_users"])
        self.users = nn.ModuleDict({d: EmbeddingTable(n_users, cfg.dim, trainable=learned)
                                    for d in self.domains_})
        self.items = nn.ModuleDict({d: EmbeddingTable(int(n), cfg.dim, trainable=learned)
                                    for d, n in architecture["n_items"].items()})
        self.recommenders = nn.ModuleDict({
            d: RatingNetwork(cfg.dim, cfg.hidden, cfg.dropout, cfg.recommender)
            for d in self.domains_})
        self.maps = nn.ModuleList([OrthogonalMap(cfg.dim) for _ in self.domains_[1:]])

    def _users(self, domain: str) -> EmbeddingTable:
        return cast(EmbeddingTable, self.users[domain])

    def _items(self, domain: str) -> EmbeddingTable:
        return cast(EmbeddingTable, self.items[domain])

    def _tables(self) -> list[EmbeddingTable]:
        return [cast(EmbeddingTable, t) for t in [*self.users.values(), *self.items.values()]]

    def _maps(self) -> list[OrthogonalMap]:
        return [cast(OrthogonalMap, x) for x in self.maps]

    def architecture(self) -> dict[str, Any]:
        return {"domains": list(self.domains_), "scales": dict(self.scales_),
                "n_users": self._users(self.domains_[0]).weight.shape[0],
                "n_items": {d: self._items(d).weight.shape[0] for d in self.domains_}}

    def mapping(self, start: str, end: str) -> torch.Tensor:
        """``X_{start,end}``: the orthogonal map from ``start``'s user space to ``end``'s."""
        self.check_fitted()
        return chain(self._maps(), self.domains_.index(start), self.domains_.index(end))

    # -- fitting -----------------------------------------------------------------------------

    def _prepare(self, train: TrainView, context: FitContext) -> list[torch.Tensor]:
        """Build the modules, run the representation stage (Eq. 2) and return every domain's
        training ratings as epoch rows (:meth:`_rating_rows`)."""
        cfg = self.config
        name = type(self).__name__
        domains = list(cfg.chain) if cfg.chain is not None else list(train.domains)
        unknown = sorted(set(domains) - set(train.domains))
        if unknown or len(domains) < 2 or len(set(domains)) != len(domains):
            raise ValueError(f"{name} needs two or more distinct domains of the train view "
                             f"{train.domains} in its chain, got {domains}")
        data = train.data
        scales = {}
        for d in domains:
            scale = data[d].rating_scale
            if scale is None:
                raise ValueError(f"{name} predicts ratings; domain {d!r} holds implicit feedback")
            scales[d] = [float(scale[0]), float(scale[1])]
        self._build({"domains": domains, "scales": scales, "n_users": data.n_users,
                     "n_items": {d: data[d].n_items for d in domains}})
        if cfg.features == "ids":
            with torch.no_grad():
                for table in self._tables():
                    table.weight.copy_(torch.randn(table.weight.shape,
                                                   generator=context.generator) * 0.1)
        else:
            for d in domains:  # Representation stage, Eq. 2
                for entity, table in (("user", self._users(d)), ("item", self._items(d))):
                    found = entity_features(data[d], data.n_users, cast(Entity, entity),
                                            cfg.features)
                    assert found is not None
                    features, interactions = found
                    weights = fit_embeddings(
                        features, cfg.dim, cfg.autoencoder, context=context,
                        stage=f"autoencoder_{entity}_{d}",
                        observed_weight=cfg.autoencoder.observed_weight if interactions else 1.0)
                    with torch.no_grad():
                        table.weight.copy_(weights)
        self.to(context.device)
        ratings = self._rating_rows(train, domains)
        # Users with training ratings per domain (the ``transfer`` cross step's rows).
        self._trained_users = {}
        for d in domains:
            mask = torch.zeros(data.n_users, dtype=torch.bool)
            mask[data[d].interactions.user] = True
            self._trained_users[d] = mask.to(context.device)
        return ratings

    def network_parameters(self) -> list[nn.Parameter]:
        """The recommenders' parameters, and the embeddings when they are learned from ids."""
        network = [p for net in self.recommenders.values() for p in net.parameters()]
        if self.config.features == "ids":
            network += [t.weight for t in self._tables()]
        return network

    def _rating_rows(self, train: TrainView, domains: list[str]) -> list[torch.Tensor]:
        """Every domain's training ratings as (domain index, user, item, rating in [0, 1])."""
        parts = []
        for d, name in enumerate(domains):
            inter = train.data[name].interactions
            low, high = self.scales_[name]
            parts.append((torch.full((len(inter),), d), inter.user, inter.item,
                          (inter.rating.float() - low) / (high - low)))
        return [torch.cat(column) for column in zip(*parts, strict=True)]

    def _orthogonalise(self) -> None:
        for x in self._maps():
            x.orthogonalise()

    # -- losses ------------------------------------------------------------------------------

    def _score(self, rs: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.recommenders[rs](users, items)

    def _per_domain(self, batch: Sequence[torch.Tensor], term: Any) -> torch.Tensor:
        """Sum over domains of ``term(d, users, items, ratings)`` weighted by the domain's share
        of the batch, so the loss stays a mean over the batch's rows."""
        flag, user, item, rating = (t.to(self.device) for t in batch)
        total = torch.zeros((), device=self.device)
        for d in range(len(self.domains_)):
            sel = flag == d
            if bool(sel.any()):
                total = total + term(d, user[sel], item[sel], rating[sel]) * sel.float().mean()
        return total

    def _in_domain_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Algorithm 1 lines 4-5: ``||r_d - RS_d(W_ud, W_id)||^2`` per domain."""
        def term(d: int, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            name = self.domains_[d]
            return (self._score(name, self.users[name](u), self.items[name](i)) - r).pow(2).mean()
        return self._per_domain(batch, term)

    def _mapping_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Eq. 3 + Eq. 4 on a batch of overlap users, per adjacent pair; embeddings detached
        (the mapping step updates X only, Algorithm 1 line 10)."""
        pair, user = (t.to(self.device) for t in batch)
        total = torch.zeros((), device=self.device)
        for j, x in enumerate(self._maps()):
            sel = pair == j
            if not bool(sel.any()):
                continue
            a, b = self.domains_[j], self.domains_[j + 1]
            wa = self.users[a](user[sel]).detach()
            wb = self.users[b](user[sel]).detach()
            total = total + x.dual_loss(wa, wb) * sel.float().mean()
        return total

    def _cross_inputs(self, d: int, u: torch.Tensor
                      ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The cross-step terms for ratings of domain ``d`` by users ``u``: (recommender,
        mapped user embedding, mask of the rows it applies to), one per adjacent pair holding
        ``d`` (``cross`` setting, module docstring)."""
        name = self.domains_[d]
        own = self.users[name](u)
        every = torch.ones(u.numel(), dtype=torch.bool, device=u.device)
        terms = []
        for j, x in enumerate(self._maps()):
            if d not in (j, j + 1):
                continue
            forward = d == j  # d is the pair's first domain: X maps d's users to the other's
            other = self.domains_[j + 1 if forward else j]
            if self.cross_form == "transfer":
                theirs = self.users[other](u)
                mapped = x.inverse(theirs) if forward else x(theirs)
                terms.append((name, mapped, self._trained_users[other][u]))
            else:
                mapped = x(own) if forward else x.inverse(own)
                rs = name if self.cross_form == "eq56" else other
                terms.append((rs, mapped, every))
        return terms

    def _cross_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Algorithm 1 lines 13-14 (Eq. 5-6 by default): ``||r_d - RS(mapped W_u, W_id)||^2``."""
        def term(d: int, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            items = self.items[self.domains_[d]](i)
            losses = []
            for rs, mapped, mask in self._cross_inputs(d, u):
                err = (self._score(rs, mapped, items) - r).pow(2)
                losses.append((err * mask).sum() / mask.sum().clamp_min(1))
            return torch.stack(losses).mean()
        return self._per_domain(batch, term)

    # -- predicting --------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.recommenders:
            raise KeyError(f"{type(self).__name__} was fitted on {self.domains_}, not {domain!r}")
        users, items = users.to(self.device), items.to(self.device)
        low, high = self.scales_[domain]
        out = self.recommenders[domain](self.users[domain](users), self.items[domain](items))
        return low + (high - low) * out
