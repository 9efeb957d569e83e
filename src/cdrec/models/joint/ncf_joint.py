"""NCF-joint: one NeuMF over all domains merged, DML's "NCF-joint" baseline (Li and Tuzhilin,
"Dual Metric Learning for Effective and Efficient Cross-Domain Recommendations", Sec. 5.3:
"merge the data records of both domains and jointly train the NCF model").

The model is the NeuMF base (``cdrec.models.bases.neumf``, He et al., WWW 2017, Sec. 3.4) with
its defaults, trained once on the union of the domains' training rows:

- one user space: users are the shared ids of the train view, one row per user for every domain;
- one item index: the items of every domain one after another (``merge_domains``: the first
  domain keeps its indices, each other domain's are shifted by the sizes before it, kept in
  ``offsets_``);
- one objective: the NeuMF loss on every domain's rows together (squared error on ratings, one
  global mean over all of them plus per-item biases; NCF's log loss on implicit feedback);
- every domain is predicted and evaluated on its own items: ``predict(domain, users, items)``
  scores the merged items ``offsets_[domain] + items``.

Choices of cdrec: on implicit feedback a positive's sampled negatives are items of *its own*
domain (``merged_epoch_batches``). Early stopping uses the scenario's validation set (all
domains it judges); without one, the fit runs every epoch, as CMF does. Users with no training
row in any domain keep the prior (a zero row: the item-side prediction). In the cold-start
scenario this is the merged single-domain NeuMF (as ``NeuMF`` there) with per-domain negatives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.bases.neumf import NeuMFConfig
from cdrec.models.bases.pretrain import new_base, users_without_data
from cdrec.models.bases.registry import base_spec, build_base
from cdrec.models.bases.single_domain import merge_domains, merged_epoch_batches
from cdrec.models.recommender import Recommender, validator
from cdrec.models.registry import LABELLED_SCENARIOS, register
from cdrec.models.training import fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult


@register("NCF-joint")
class NCFJoint(Recommender):
    """One NeuMF over the merged domains (see module docstring)."""

    Config = NeuMFConfig
    config: NeuMFConfig
    supports = LABELLED_SCENARIOS
    transient_attributes = frozenset({"stage_"})  # the fit's record, not used to predict
    neumf: EmbeddingBase  # the NeuMF base over the merged item index (set in ``_fit``)
    offsets_: dict[str, int]  # domain -> index of its first item in the merged index
    stage_: StageResult

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg, names = self.config, train.domains
        merged, offsets = merge_domains(train, names)
        self.offsets_ = offsets
        # Registered before training so that validation can call predict on it.
        self.neumf = base = new_base(merged, names[0], "NeuMF", cfg, context)
        base.reset_users(users_without_data(merged, names[0]))  # no row anywhere: the prior
        self.to(context.device)
        epoch_data = merged_epoch_batches(train, offsets, cfg.n_neg)

        self.stage_ = fit_stage(self, lambda batch: base.training_loss(*batch), epoch_data, cfg,
                                context=context, stage="ncf_joint",
                                validate=validator(self, validation), after_step=base.after_step)

    def architecture(self) -> dict[str, Any]:
        return {"base": base_spec(self.neumf)}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        self.neumf = build_base(architecture["base"])

    def _offset(self, domain: str) -> int:
        self.check_fitted()
        if domain not in self.offsets_:
            raise KeyError(f"NCF-joint was fitted on {list(self.offsets_)}, not {domain!r}")
        return self.offsets_[domain]

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        items = torch.arange(n_items, device=users.device) + self._offset(domain)
        return self.neumf.score_items(self.neumf.user_state(users), items)

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        offset = self._offset(domain)  # checks the fit first
        return self.neumf(users, items + offset)
