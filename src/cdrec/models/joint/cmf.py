"""Collective matrix factorisation (Singh and Gordon, KDD 2008): the domains' rating matrices are
factorised jointly with one shared user factor table, so a user's source ratings shape the
factors used in the target. Per-domain item factors, item biases, user biases and global means;
the loss is a weighted sum of the per-domain losses (Singh and Gordon, Eq. 1 with squared loss,
or BPR for implicit feedback). A cold-start user's target user bias stays at its prior, zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.bases.mf import MFBase, MFConfig
from cdrec.models.bases.pretrain import new_base, users_without_data
from cdrec.models.bases.registry import base_spec, build_base
from cdrec.models.recommender import Recommender, validator
from cdrec.models.registry import LABELLED_SCENARIOS, register
from cdrec.models.training import fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult


def mf_base(base: EmbeddingBase) -> MFBase:
    """A base built as ``"MF"``, typed as the MF base CMF needs (it sets the user biases)."""
    if not isinstance(base, MFBase):
        raise TypeError(f"CMF needs MF bases, got {type(base).__name__}")
    return base


class CMFConfig(MFConfig):
    source_weight: float = Field(1.0, ge=0, description=(
        "weight of the non-target domains' losses relative to the target's (alpha)"))


@register("CMF")
class CMF(Recommender):
    """Shared user factors across all domains of the train view (see module docstring)."""

    Config = CMFConfig
    config: CMFConfig
    supports = LABELLED_SCENARIOS
    transient_attributes = frozenset({"stage_"})  # the fit's record, not used to predict
    models: nn.ModuleDict  # domain -> its MF base, all sharing one user table (set in ``_fit``)
    stage_: StageResult

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        names = train.domains
        shared = nn.Embedding(train.data.n_users, cfg.dim, sparse=cfg.sparse)
        with torch.no_grad():
            shared.weight.copy_(torch.randn(shared.weight.shape, generator=context.generator)
                                * 0.1)
            # Users with no data in any domain keep the prior.
            present = torch.zeros(train.data.n_users, dtype=torch.bool)
            for name in names:
                present[train.data[name].interactions.user] = True
            shared.weight[~present] = 0.0
        bases = {name: mf_base(new_base(train, name, "MF", cfg, context, user_factors=shared))
                 for name in names}
        self.models = nn.ModuleDict(bases)
        for name in names:
            with torch.no_grad():
                bases[name].user_bias[users_without_data(train, name)] = 0.0
        self.to(context.device)
        weights = torch.tensor([1.0 if n == train.target else cfg.source_weight for n in names])
        inters = [train.data[n].interactions for n in names]
        flag = torch.cat([torch.full((len(x),), d) for d, x in enumerate(inters)])
        per_domain = [epoch_batches(x, train.data[n].n_items, train.implicit, cfg.n_neg)
                      for n, x in zip(names, inters, strict=True)]
        weights = weights.to(context.device)

        def epoch_data(gen: torch.Generator) -> list[torch.Tensor]:
            parts = [draw(gen) for draw in per_domain]  # (users, items, ratings or negatives)
            return [flag, *(torch.cat(column) for column in zip(*parts, strict=True))]

        def loss_fn(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            f, u, i, extra = batch
            total = torch.zeros((), device=u.device)
            for d, name in enumerate(names):
                sel = f == d
                if not bool(sel.any()):
                    continue
                loss = bases[name].training_loss(u[sel], i[sel], extra[sel])
                # Each domain's share of the batch keeps the objective a per-row average.
                total = total + weights[d] * loss * sel.float().mean()
            return total

        self.stage_ = fit_stage(self, loss_fn, epoch_data, cfg, context=context, stage="cmf",
                                validate=validator(self, validation))

    def architecture(self) -> dict[str, Any]:
        bases = {name: mf_base(base) for name, base in self.models.items()}  # type: ignore[arg-type]
        return {"n_users": next(iter(bases.values())).n_users,
                "bases": {name: base_spec(base) for name, base in bases.items()}}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        shared = nn.Embedding(int(architecture["n_users"]), self.config.dim,
                              sparse=self.config.sparse)
        self.models = nn.ModuleDict({name: build_base(spec, user_factors=shared)
                                     for name, spec in architecture["bases"].items()})

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"CMF was fitted on {list(self.models)}, not {domain!r}")
        base = mf_base(self.models[domain])  # type: ignore[arg-type]
        return base.score_items(base.user_state(users), torch.arange(n_items,
                                                                     device=users.device))

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.models:
            raise KeyError(f"CMF was fitted on {list(self.models)}, not {domain!r}")
        return self.models[domain](users, items)
