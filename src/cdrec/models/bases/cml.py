"""CML: collaborative metric learning (Hsieh, Yang, Cui, Lin, Belongie, Estrin, WWW 2017), and on
explicit ratings its rating-prediction form, Metric Factorization (Zhang, Yao, Tay, Xu, Zhang,
Zhu, "Metric Factorization: Recommendation beyond Matrix Factorization", arXiv:1802.04606, 2018).

Users and items are points of one Euclidean space; a user is close to the items they like.

Implicit feedback (CML):

- distance (Eq. 1): d(u, i) = ||u - v_i||. The score is -d(u, i)^2, so that higher is better as
  everywhere in cdrec (and ranking by it is the paper's nearest-neighbour recommendation).
- weighted hinge loss (Eq. 2): for a positive (u, j) and sampled negatives k,
  L_m = sum_k w_uj [m + d(u, j)^2 - d(u, k)^2]_+ with margin m (``margin``).
- rank weight (Eq. 3 with the paper's sampled rank estimate): w_uj = log(rank_d(u, j) + 1),
  rank_d(u, j) ~ floor(J * M / U) with J the number of items, U the sampled negatives and M the
  number of impostors among them (negatives with d(u, k)^2 < d(u, j)^2 + m). It is a constant of
  the step (no gradient through the count). Cheap and vectorised, so it is on by default;
  ``rank_weight=false`` gives the plain hinge (w = 1). Unlike the paper's sampler, which redraws
  U negatives per positive, cdrec uses the loop's ``n_neg`` negatives as the U of Eq. 3.
- constraints ||u||^2 <= 1, ||v||^2 <= 1 of the paper's objective: the tables are projected onto
  the unit ball once at construction, and after every optimiser step the rows it changed
  (``after_step``: the batch's rows when trained sparsely, the whole tables with dense Adam).

Explicit ratings (Metric Factorization, rating prediction): a rating is turned into a distance
and the squared distance plus biases is fitted to it.

- distance target: d_ui = r_max - r_ui, with r_max the top of the rating scale (5 on 1-5);
- predicted distance: d_hat(u, i) = ||u - v_i||^2 + b_u + b_i + c, with the global offset
  c = r_max - mu (mu the mean training rating; the offset of the authors' code, fixed like MF's
  mu, since free biases would absorb any learned shift);
- loss: squared error (d_hat - d_ui)^2, the mean over a batch;
- prediction: r_hat(u, i) = r_max - d_hat(u, i) = mu - ||u - v_i||^2 - b_u - b_i. r_max cancels
  (d_hat - d_ui = r_ui - r_hat exactly), so the base needs no rating scale: its score is r_hat
  and its loss the squared rating error of every explicit base. Predictions are not clamped to
  the scale, as MF's are not.
- biases: each table has one more column, the bias: a user row is [u, b_u] (the user state, as
  MF's [p_u, b_u], so a mapping or fold-in produces the bias with the point) and an item row
  [v_i, b_i]. Biases thus get their rows' sparse gradients, ``reset_users`` puts a user at the
  prior (u = 0, b_u = 0: r_hat = mu - ||v_i||^2 - b_i), and the item rows have the width of the
  user states, as a method working in the users' space expects (SSCDR).
- ball: only the points u, v_i are kept in a ball, the biases are free. Its radius rho
  (``radius``) defaults to 1 on implicit feedback (CML's unit ball, unchanged) and to 1/2 on
  ratings. Two points of the ball are at most (2 rho)^2 apart in squared distance: 4 at rho = 1
  (the whole span of d_ui on a 1-5 scale, so the unit ball does not prevent fitting), 1 at
  rho = 1/2, one rating step. mu and the biases carry the main effects, so the metric term only
  has to model the user-item interaction, and the smaller ball regularises it (the authors'
  code clips norms at 1, with 150 dimensions, Adagrad and no early stopping). The default was
  chosen on validation ratings: on the Douban sample (``configs/kfold_douban_sample.yaml``,
  default settings, folds 0-3) the validation RMSE was 0.8864 / 0.8751 / 0.8684 / 0.8704 at
  rho = 1, 0.8653 / 0.8473 / 0.8414 / 0.8411 at rho = 1/2 and 0.8645 / 0.8402 / 0.8376 / 0.8399
  at rho = 1/4 (each a ``CML`` fit with that ``radius``, scored on ``split.validation``). 1/4
  is lower still by 0.001-0.007, but a smaller ball leaves the biases nearly alone, so 1/2 is
  kept as the default; ``radius`` is in the tune spaces (Douban's tuning chose 1/4).
- not implemented, from the authors' code: the per-rating confidence weight
  1 + 0.2 |r - r_max / 2|, the dropout on the squared coordinate differences, and the clipping of
  the predicted distance to [0, r_max]. Their small L2 on the biases is ``reg`` here (on the
  whole rows of a batch, biases included; 0 by default, as in the implicit mode).

Not implemented from CML: the item-feature loss L_f (no item features here) and the covariance
regulariser L_c. The paper uses no L2 penalty (it "pulls every object toward the origin"), so the
shared L2 ``penalty`` exists but ``reg`` defaults to 0. The user state is u (on ratings
[u, b_u]); a user without data sits at the origin and scores items by -||v_i||^2 (on ratings,
mu - ||v_i||^2 - b_i).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cdrec.models.bases.interface import BaseConfig, FactorBase, weighted_mean
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register

RATING_RADIUS = 0.5  # default ball radius on ratings (module docstring)


class CMLConfig(BaseConfig):
    margin: float = Field(0.5, gt=0, description="hinge margin m of the triplet loss (Eq. 2)")
    rank_weight: bool = Field(True, description=(
        "WARP-style weight log(floor(J M / U) + 1) per positive (Eq. 3); False: plain hinge"))
    reg: float = Field(0.0, ge=0, description=(
        "L2 weight on the embedding rows of a batch (the paper uses none: the unit ball instead)"))
    radius: float | None = Field(None, gt=0, description=(
        "radius of the ball users and items are kept in; None: 1 on implicit feedback (CML's "
        "unit ball), 0.5 on ratings (points at most 1 rating step apart)"))

    def ball_radius(self, implicit: bool) -> float:
        """``radius``, or its default for the feedback: 1 (implicit), 0.5 (ratings)."""
        if self.radius is not None:
            return self.radius
        return 1.0 if implicit else RATING_RADIUS


def with_bias_column(table: nn.Embedding, sparse: bool) -> nn.Embedding:
    """``table`` with one more column, zero: the bias of each row (ratings mode)."""
    weight = table.weight.detach()
    wider = nn.Embedding(weight.shape[0], weight.shape[1] + 1, sparse=sparse)
    with torch.no_grad():
        wider.weight.copy_(torch.cat([weight, weight.new_zeros(weight.shape[0], 1)], 1))
    return wider


def into_ball(points: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """v <- v / max(1, ||v|| / radius), row-wise: onto the ball of ``radius``."""
    return points / (points.norm(dim=-1, keepdim=True) / radius).clamp_min(1.0)


@register_base("CML")
class CMLBase(FactorBase):
    """CML points; score -||u - v_i||^2, weighted hinge loss, projection onto the ball. On ratings,
    Metric Factorization: score mu - ||u - v_i||^2 - b_u - b_i, squared error."""

    Config = CMLConfig
    config: CMLConfig
    global_mean: torch.Tensor  # buffer, ratings mode only

    def __init__(self, n_users: int, n_items: int, config: CMLConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std)
        if not implicit:  # [point, bias] rows; the points drawn exactly as in the implicit mode
            self.user_factors = with_bias_column(self.user_factors, config.sparse)
            self.item_factors = with_bias_column(self.item_factors, config.sparse)
            self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.radius = config.ball_radius(implicit)
        self.after_step()  # start inside the ball

    @property
    def user_dim(self) -> int:
        return self.config.dim + (0 if self.implicit else 1)

    @property
    def point_dim(self) -> int:
        """The leading coordinates of a row that are a point of the metric space (all of an
        implicit row; on ratings all but the trailing bias)."""
        return self.config.dim

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.implicit:
            return -torch.cdist(state, self.item_factors.weight[items]).pow(2)
        dim, rows = self.config.dim, self.item_factors.weight[items]
        distance = torch.cdist(state[:, :dim], rows[:, :dim]).pow(2)
        return self.global_mean - (distance + state[:, dim:] + rows[:, dim])

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.implicit:
            return -(state - self.item_factors(items)).pow(2).sum(-1)
        dim, rows = self.config.dim, self.item_factors(items)
        distance = (state[..., :dim] - rows[..., :dim]).pow(2).sum(-1)
        return self.global_mean - (distance + state[..., dim] + rows[..., dim])

    def loss_with(self, state: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        if not self.implicit:  # (d_hat - (r_max - r))^2 = (r_hat - r)^2: the squared error
            return super().loss_with(state, items, target, weight)
        d_pos = -self.score_with(state, items)  # d(u, j)^2, [B]
        d_neg = -self.score_with(state.unsqueeze(-2), target)  # d(u, k)^2, [B, U]
        violation = self.config.margin + d_pos.unsqueeze(-1) - d_neg
        loss = violation.clamp_min(0.0).sum(-1)
        if self.config.rank_weight:
            impostors = (violation > 0).sum(-1).to(loss.dtype)  # M
            rank = torch.floor(self.n_items * impostors / target.shape[-1])
            loss = torch.log1p(rank) * loss
        return weighted_mean(loss, weight)

    def after_step(self) -> None:
        """Project the user and item vectors onto the ball: v <- v / max(1, ||v|| / radius)
        (radius 1 on implicit feedback; on ratings the points only, not the bias column).

        Trained sparsely, a step changes only the rows of its batch (those in the table's
        sparse gradient), so only they are projected: the cost of the batch, not the table;
        the other rows are inside the ball already. Dense Adam moves every row, so the
        whole table is projected."""
        dim, radius = self.point_dim, self.radius
        with torch.no_grad():
            for table in (self.user_factors.weight, self.item_factors.weight):
                grad = table.grad
                if grad is not None and grad.is_sparse:
                    rows = grad._indices()[0].unique()
                    table[rows, :dim] = into_ball(table[rows, :dim], radius)
                else:
                    points = table[:, :dim]  # a view: the whole row when implicit
                    points.div_((points.norm(dim=1, keepdim=True) / radius).clamp_min(1.0))

    def constrain_state(self, state: torch.Tensor) -> torch.Tensor:
        """Users live in the ball (the projection above; on ratings the bias is free)."""
        dim = self.point_dim
        if self.implicit:
            return into_ball(state, self.radius)
        return torch.cat([into_ball(state[..., :dim], self.radius), state[..., dim:]], -1)


@register("CML")
class CML(SingleDomain):
    """CML on each domain separately (implicit feedback); Metric Factorization on ratings."""

    base_name = "CML"
