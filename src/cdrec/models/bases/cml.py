"""CML: collaborative metric learning (Hsieh, Yang, Cui, Lin, Belongie, Estrin, WWW 2017).

Users and items are points of one Euclidean space; a user is close to the items they like.

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

Not implemented: the item-feature loss L_f (no item features here) and the covariance
regulariser L_c. The paper uses no L2 penalty (it "pulls every object toward the origin"), so the
shared L2 ``penalty`` exists but ``reg`` defaults to 0. Implicit feedback only. The user state is
u; a user without data sits at the origin and scores items by -||v_i||^2.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cdrec.models.bases.interface import BaseConfig, FactorBase, weighted_mean
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register


class CMLConfig(BaseConfig):
    margin: float = Field(0.5, gt=0, description="hinge margin m of the triplet loss (Eq. 2)")
    rank_weight: bool = Field(True, description=(
        "WARP-style weight log(floor(J M / U) + 1) per positive (Eq. 3); False: plain hinge"))
    reg: float = Field(0.0, ge=0, description=(
        "L2 weight on the embedding rows of a batch (the paper uses none: the unit ball instead)"))


@register_base("CML")
class CMLBase(FactorBase):
    """CML points; score -||u - v_i||^2, weighted hinge loss, unit-ball projection."""

    Config = CMLConfig
    config: CMLConfig
    implicit_only = True

    def __init__(self, n_users: int, n_items: int, config: CMLConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator,
                         init_std=init_std)
        self.after_step()  # start inside the unit ball



    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(state, self.item_factors.weight[items]).pow(2)

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return -(state - self.item_factors(items)).pow(2).sum(-1)

    def loss_with(self, state: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
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
        """Project the user and item vectors onto the unit ball: v <- v / max(1, ||v||).

        Trained sparsely, a step changes only the rows of its batch (those in the table's
        sparse gradient), so only they are projected: the cost of the batch, not the table;
        the other rows are inside the ball already. Dense Adam moves every row, so the
        whole table is projected."""
        with torch.no_grad():
            for table in (self.user_factors.weight, self.item_factors.weight):
                grad = table.grad
                if grad is not None and grad.is_sparse:
                    rows = grad._indices()[0].unique()
                    vectors = table[rows]
                    table[rows] = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1.0)
                else:
                    table.div_(table.norm(dim=1, keepdim=True).clamp_min(1.0))

    def constrain_state(self, state: torch.Tensor) -> torch.Tensor:
        """Users live in the unit ball (the projection above)."""
        return state / state.norm(dim=-1, keepdim=True).clamp_min(1.0)


@register("CML")
class CML(SingleDomain):
    """CML on each domain separately (implicit feedback)."""

    base_name = "CML"
