"""EMCDR: embedding and mapping for cross-domain recommendation (Man et al., IJCAI 2017).

1. Latent factor modelling: a base model per domain (any registered base: MF, BPR, ...).
2. Latent space mapping: a function f, linear (EMCDR Eq. 4) or a one-hidden-layer MLP with tanh
   (EMCDR Eq. 6, hidden size 2k), fitted on overlap users by minimising
   sum_u ||f(U^s_u) - U^t_u||^2 (Eq. 3/5): the distance-oriented objective.
3. Cold-start users in the target get f(U^s_u) as their target user state.

What cdrec adds (selectable, so the paper's form can be reported too): with the default biased
MF base the user state is ``[p_u, b_u]``, so the mapping carries the user bias with the factors,
since a cold-start user's target bias is otherwise unknown. ``base_config.use_bias=false`` is the
paper's plain-MF form. ``overlap_only=true`` pretrains both bases on overlap users only, the
original EMCDR setting (TMCDR's ``EMCDR_ori``); by default the bases use all training data
(TMCDR Sec. 2.1). Early stopping of the mapping uses the cold-start validation users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field

from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.coldstart.transfer import (
    TransferConfig,
    TransferMethod,
    mapping_network,
    ridge_mapping,
)
from cdrec.models.recommender import choose_on_validation, validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class EMCDRConfig(TransferConfig, TrainingConfig):
    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 500, "batch_size": 256,
                                                   "lr": 0.005, "patience": 20}

    mapping: Literal["linear", "mlp", "ridge"] = Field("mlp", description=(
        "linear (Eq. 4) or MLP (Eq. 6) trained by Adam, or the linear map in closed form with "
        "a ridge penalty (cdrec's addition; no epochs)"))
    hidden_factor: int = Field(2, ge=1, description="MLP hidden size = hidden_factor * input size")
    ridge: float = Field(0.01, gt=0, description=(
        "ridge penalty of mapping: ridge when no validation users are given"))
    ridge_grid: list[Annotated[float, Field(gt=0)]] | None = Field(
        default_factory=lambda: [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0], description=(
            "with validation users, the ridge penalty is chosen from this grid on them; "
            "null keeps `ridge`"))


@register("EMCDR")
class EMCDR(TransferMethod):
    """Pretrained source/target bases plus a mapping fitted on overlap users (distance loss)."""

    Config = EMCDRConfig
    config: EMCDRConfig

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        if cfg.mapping == "ridge":
            self._fit_ridge(overlap, validation)
            return
        self.transfer_ = self._new_transfer()
        self.transfer_.to(context.device)
        source: EmbeddingBase = self.source_
        target: EmbeddingBase = self.target_

        def loss_fn(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            (u,) = batch
            return (self.transfer_(source.user_state(u))
                    - target.user_state(u)).pow(2).sum(-1).mean()

        fit_stage(self, loss_fn, lambda gen: [overlap], cfg, context=context, stage="mapping",
                  validate=validator(self, validation), parameters=trainable(self.transfer_))

    def _new_transfer(self) -> torch.nn.Module:
        kind = "linear" if self.config.mapping == "ridge" else self.config.mapping
        return mapping_network(kind, self.source_.user_dim, self.target_.user_dim,
                               self.config.hidden_factor)

    def _fit_ridge(self, overlap: torch.Tensor, validation: Evaluator | None) -> None:
        """The closed-form map; its penalty chosen on the validation users (as ItemMean's
        shrinkage is), never on test users."""
        with torch.no_grad():
            x, y = self.source_.user_state(overlap), self.target_.user_state(overlap)

        def apply(alpha: float) -> None:
            self.transfer_ = ridge_mapping(x, y, alpha)

        grid = self.config.ridge_grid
        if validation is None or not grid:
            apply(self.config.ridge)
        else:
            self.selected_ = choose_on_validation(self, "ridge", grid, apply, validation)
