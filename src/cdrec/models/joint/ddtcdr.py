"""DDTCDR: deep dual transfer cross-domain recommendation (P. Li and A. Tuzhilin, WSDM 2020),
the authors' model before DML and one of DML's baselines.

The same pieces as DML (:mod:`cdrec.models.joint.dual_transfer`): autoencoder embeddings of
users and items per domain, a rating network ``RS_d`` per domain, and one orthogonal map ``X``
between each pair of adjacent domains. Unlike DML there is no alternating loop: one stage trains
the recommenders and ``X`` together on

    L = (1 - alpha) sum_d ||r_d - RS_d(W_ud, W_id)||^2
        + alpha  sum_d ||r_d - RS_d'(X W_ud, W_id)||^2      (d' the other domain)

with ``X`` re-orthogonalised (Gram-Schmidt) after every step, and early stopping on the
validation ratings. The dual term's form (the other domain's recommender on the mapped user and
this domain's item) is the authors' code's, which is also DML's Algorithm 1 line 13.

What cdrec changes from the authors' code (lpworld/DDTCDR, read for facts; see
``docs/dev/dml_reference_notes.md``): the dual term there is rebuilt from ``.data`` and so gives
no gradient; here it reaches ``RS_d'`` and ``X`` (``tests/test_ddtcdr.py``). One ``X`` and its
transpose replace the code's two independent bridges (the paper's orthogonal mapping), and ``X``
is kept orthogonal exactly rather than by a small penalty. ``alpha`` defaults to the code's 0.03.
Predictions are the in-domain ``RS_d(W_ud, W_id)``, as in the code's evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from cdrec.models.joint.dual_transfer import DualTransfer, DualTransferConfig
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.models.training import fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult, trainable


class DDTCDRConfig(DualTransferConfig):
    """DDTCDR's settings: those shared with DML, and the dual term's weight."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 64, "lr": 1e-3,
                                                   "patience": 10}
    alpha: float = Field(0.03, ge=0, le=1, description=(
        "weight of the dual-transfer term (the authors' code: 0.03)"))


@register("DDTCDR")
class DDTCDR(DualTransfer):
    """Deep dual transfer: in-domain and dual-transfer losses in one stage (module docstring)."""

    Config = DDTCDRConfig  # type: ignore[assignment]  # the shared settings and alpha
    config: DDTCDRConfig
    transient_attributes = frozenset({"stage_"})
    stage_: StageResult

    @property
    def cross_form(self) -> str:
        return "algorithm1"  # the dual term RS_d'(X W_ud, W_id), as the authors' code has it

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        ratings = self._prepare(train, context)
        parameters = self.network_parameters() + trainable(self.maps)

        def loss(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            return ((1 - cfg.alpha) * self._in_domain_loss(batch)
                    + cfg.alpha * self._cross_loss(batch))

        self.stage_ = fit_stage(self, loss, lambda gen: ratings, cfg, context=context,
                                stage="ddtcdr", validate=validator(self, validation),
                                parameters=parameters, after_step=self._orthogonalise)
