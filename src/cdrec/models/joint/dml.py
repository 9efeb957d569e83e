"""DML: dual metric learning for dual-target cross-domain recommendation.

P. Li and A. Tuzhilin, "Dual Metric Learning for Effective and Efficient Cross-Domain
Recommendations", IEEE TKDE 2021 (arXiv:2104.08490). Algorithm 1:

1. Representation (Sec. 3.1, Eq. 2): per domain, separate autoencoders for users and items turn
   feature vectors into fixed embeddings ``W_u``, ``W_i`` in the unit ball
   (:mod:`cdrec.models.joint.representation`; ``features: ids`` learns them from ids instead,
   Table 9).
2. Per-domain recommenders ``RS_d``: an MLP with dropout over ``[W_u; W_i]`` (Sec. 3.4)
   predicting the rating normalised to [0, 1] (Sec. 5.1); reported on the original scale.
3. The dual loop (Algorithm 1 lines 2-17), a :func:`cdrec.train.run_schedule` of three stages
   per round: ``in_domain`` (lines 3-7: ``L_A = ||r_A - RS_A(W_uA, W_iA)||``, same for B),
   ``mapping`` (lines 8-11, Eq. 3-4: on overlap users, ``||X W_uA - W_uB||^2 +
   ||W_uA - X^T W_uB||^2``, then Gram-Schmidt), ``cross`` (lines 12-16, Eq. 5-6), until the
   round's training loss changes by less than ``tolerance`` (Sec. 6.8) or ``epochs`` rounds.

Where the paper is ambiguous, and what cdrec does:

* The cross step. Eq. 5-6 write ``r*_A = RS_A(X W_uA, W_iA)``, ``r*_B = RS_B(X^T W_uB, W_iB)``;
  Algorithm 1 line 13 swaps the recommenders (``RS_B(X W_uA, W_iA)``); the introduction
  describes feeding a user's mapped embedding from the *other* domain to a domain's recommender.
  ``cross: eq56`` (default, as the issue asks) follows the equations; ``algorithm1`` follows
  line 13; ``transfer`` is the introduction's reading, ``r*_A = RS_A(X^T W_uB, W_iA)`` and
  ``r*_B = RS_B(X W_uA, W_iB)`` for users with training data in both domains.
* Norms in the losses are squared (MSE), as Eq. 3-4 write them.
* Predictions use each domain's own embeddings, ``RS_d(W_ud, W_id)``.
* The embeddings stay fixed after the representation stage (Algorithm 1 takes them as input);
  only with ``features: ids`` are they trained, by the in-domain and cross steps.
* Selection: the round with the best validation score (mean RMSE over the domains, validation
  ratings only) is kept, and the loop also stops after ``patience`` rounds without a better one;
  the paper reports no validation set.
* ``X`` starts at the identity; the mapping step is Adam on Eq. 3 + 4 followed by Gram-Schmidt
  (:func:`cdrec.nn.orthogonal.gram_schmidt`, the paper's choice, equal to QR with a positive
  diagonal).
* Multi-domain (Sec. 4.3): N >= 2 domains in the train view's order (or ``chain``), adjacent
  pairs linked by ``X_{j,j+1}``; the mapping and cross steps run over every adjacent pair, and
  :meth:`DML.mapping` gives ``X_jk`` as the product along the chain.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from cdrec.models.joint.dual_transfer import DualTransfer, DualTransferConfig
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult, adam_step, run_schedule, train_loop, trainable


class DMLConfig(DualTransferConfig):
    """DML's settings. ``epochs`` is the maximum number of dual-loop rounds (the paper trains
    "for 100 epochs until the change of loss function is less than 1e-5"), ``batch_size`` and
    ``lr`` those of the in-domain and cross steps (Sec. 5.4: batch 64)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 64, "lr": 1e-3,
                                                   "patience": 10}
    mapping_lr: float = Field(1e-2, gt=0, description="Adam step size of the mapping step")
    tolerance: float = Field(1e-5, ge=0, description=(
        "stop when a round's training loss changes by less than this (Sec. 6.8)"))
    cross: Literal["eq56", "algorithm1", "transfer"] = Field("eq56", description=(
        "the cross step: Eq. 5-6 as written, Algorithm 1 line 13, or the other domain's "
        "mapped user embedding (module docstring)"))
    overlap_users: int | None = Field(None, ge=0, description=(
        "learn X from this many randomly chosen overlap users (Fig. 3); None: all. The other "
        "overlap users keep their ratings in both domains (the paper drops their records)"))
    stage_epochs: int = Field(1, ge=1, description="epochs of each stage per round")


@register("DML")
class DML(DualTransfer):
    """Dual metric learning over two or more domains (see module docstring)."""

    Config = DMLConfig  # type: ignore[assignment]  # the shared settings and the loop's
    config: DMLConfig
    transient_attributes = frozenset({"schedule_"})
    schedule_: list[StageResult]

    @property
    def cross_form(self) -> str:
        return self.config.cross

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        ratings = self._prepare(train, context)
        domains = self.domains_
        pairs = self._overlap_rows(train, domains, context.generator)
        network = self.network_parameters()
        in_domain = adam_step(network, self._in_domain_loss, lr=cfg.lr,
                              weight_decay=cfg.weight_decay)
        cross = adam_step(network, self._cross_loss, lr=cfg.lr, weight_decay=cfg.weight_decay)
        mapping = adam_step(trainable(self.maps), self._mapping_loss, lr=cfg.mapping_lr,
                            after_step=self._orthogonalise)

        def stage(step: Any, rows: list[torch.Tensor], batch_size: int) -> Any:
            def run(name: str) -> StageResult:
                return train_loop(self, step, lambda gen: rows, context=context, stage=name,
                                  epochs=cfg.stage_epochs, batch_size=batch_size)
            return run

        stages = [("in_domain", stage(in_domain, ratings, cfg.batch_size))]
        if pairs[0].numel():
            stages.append(("mapping", stage(mapping, pairs, cfg.batch_size)))
        stages.append(("cross", stage(cross, ratings, cfg.batch_size)))
        self.schedule_ = run_schedule(stages, rounds=cfg.epochs, tolerance=cfg.tolerance,
                                      module=self, validate=validator(self, validation),
                                      patience=cfg.patience, context=context, name="dual_loop")

    def _overlap_rows(self, train: TrainView, domains: list[str], generator: torch.Generator
                      ) -> list[torch.Tensor]:
        """(pair index j, user) for the overlap users of every adjacent pair (j, j+1) of the
        chain, subsampled to ``overlap_users`` per pair (seeded) when set."""
        parts = []
        for j, (a, b) in enumerate(pairwise(domains)):
            users = train.data.overlap_users(a, b)
            # Drawn at every setting, so that all of them leave the generator in one state.
            keep = torch.randperm(users.numel(), generator=generator)
            if self.config.overlap_users is not None:
                users = users[keep[:self.config.overlap_users]].sort().values
            parts.append((torch.full((users.numel(),), j), users))
        return [torch.cat(column) for column in zip(*parts, strict=True)]

