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
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.coldstart.transfer import TransferConfig, TransferMethod, mapping_network
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class EMCDRConfig(TransferConfig, TrainingConfig):
    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 500, "batch_size": 256, "lr": 0.005, "patience": 20}

    mapping: Literal["linear", "mlp"] = "mlp"
    hidden_factor: int = Field(2, ge=1, description="MLP hidden size = hidden_factor * input size")


@register("EMCDR")
class EMCDR(TransferMethod):
    """Pretrained source/target bases plus a mapping fitted on overlap users (distance loss)."""

    Config = EMCDRConfig
    config: EMCDRConfig

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        self.transfer_ = mapping_network(cfg.mapping, self.source_.user_dim,
                                         self.target_.user_dim, cfg.hidden_factor)
        self.transfer_.to(context.device)
        source: EmbeddingBase = self.source_
        target: EmbeddingBase = self.target_

        def loss_fn(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            (u,) = batch
            return (self.transfer_(source.user_state(u))
                    - target.user_state(u)).pow(2).sum(-1).mean()

        fit_stage(self, loss_fn, lambda gen: [overlap], cfg, context=context, stage="mapping",
                  validate=validator(self, validation), parameters=trainable(self.transfer_))
