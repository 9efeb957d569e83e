"""CST: coordinate system transfer (Pan, Xiang, Liu, Yang, "Transfer Learning in Collaborative
Filtering for Sparsity Reduction", AAAI 2010), in the form TMCDR compares against: the source
model is a pretrained model whose user coordinates the target model starts from and is pulled
towards while it is fine-tuned on the target data.

The paper's text is not among cdrec's shipped papers; equation numbers are ours.

1. Coordinate system construction (Eq. 1): factorise the auxiliary (source) data. The paper
   takes the top singular vectors U_0 of a sparse SVD; cdrec pretrains the chosen base (biased MF
   by default) on the source domain, so U_0 is the source base's user states U^s.
2. Coordinate system adaptation (Eq. 2): the target factors start at the source coordinates and
   are fitted to the target data with a regulariser pulling them back,
         min  L_target(U, V) + lambda * sum_u ||U_u - U^s_u||^2          (cdrec's Eq. 2)
   The paper's objective is a tri-factorisation R ~ U B V^T with orthonormal U, V and pulls
   rho_u/2 ||U - U_0||^2 (and rho_v/2 ||V - V_0||^2 when items are shared); cdrec keeps the base's
   own model and loss (TMCDR's "source model as a pre-trained model" reading), pulls the whole
   user state (with biased MF: [p_u, b_u]), and per batch like every base's L2 term: the pull is
   summed over the batch's rows and divided by the batch size. The base's own L2 penalty stays on
   (so the pull has a shrinkage towards 0 added; with ``reg`` << lambda it is negligible).
   Item factors are initialised from the source only with ``init_items=true``, which needs the
   two domains to share their item space (cross-system data; the paper's item-side auxiliary
   matrix); different domains' items are not comparable, so it is off by default.
3. Cold-start users: they have no target rows, so nothing moves their factors and their target
   state is exactly the transferred initialisation U^s_u.

Training: the source base as every transfer method pretrains it; the fine-tuning is one stage of
the shared loop (``fit_stage``) with the base's own epochs, batch size and learning rate, early
stopped on the cold-start validation users when the scenario has them (else all epochs run).
lambda is not recovered from the paper; 1.0 is cdrec's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field

from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.bases.pretrain import new_base, pretrain_base
from cdrec.models.bases.registry import base_spec, build_base
from cdrec.models.coldstart.transfer import TransferConfig, restrict_to_users
from cdrec.models.recommender import Recommender, validator
from cdrec.models.registry import register
from cdrec.models.serving import NewHistory, fold_in
from cdrec.models.training import fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class CSTConfig(TransferConfig):
    pull: float = Field(1.0, ge=0, description=(
        "lambda of Eq. 2: weight of ||U^t_u - U^s_u||^2 per batch row (cdrec's choice)"))
    init_items: bool = Field(False, description=(
        "also start the target item factors at the source's (domains sharing one item space)"))


def copy_coordinates(source: EmbeddingBase, target: EmbeddingBase, items: bool) -> None:
    """Eq. 2's starting point: the target's user-side tensors (``user*`` in the state dict; and
    ``item*`` with ``items``) become copies of the source's."""
    prefixes = ("user", "item") if items else ("user",)
    if items and source.n_items != target.n_items:
        raise ValueError(f"init_items needs one item space, but the source has {source.n_items} "
                         f"items and the target {target.n_items}")
    dest = target.state_dict()
    with torch.no_grad():
        for name, value in source.state_dict().items():
            if name.startswith(prefixes):
                dest[name].copy_(value)
        users = torch.arange(source.n_users, device=next(target.parameters()).device)
        if not torch.equal(source.user_state(users), target.user_state(users)):
            raise TypeError(f"CST cannot copy the user coordinates of {type(source).__name__}: "
                            "its user-side parameters must be named user*")


@register("CST")
class CST(Recommender):
    """Source-pretrained user coordinates, fine-tuned on the target under a pull towards them."""

    Config = CSTConfig
    config: CSTConfig
    supports = frozenset({"coldstart"})
    source_: EmbeddingBase
    target_: EmbeddingBase
    anchor_: torch.Tensor
    domains_: tuple[str, str]

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        source_name, target_name = train.transfer_domains()
        view = train
        if cfg.overlap_only:
            view = restrict_to_users(train, train.data.overlap_users(source_name, target_name))
        settings = cfg.base_settings()
        self.source_ = pretrain_base(view, source_name, cfg.base, settings, context)
        for p in self.source_.parameters():
            p.requires_grad_(False)
        self.domains_ = (source_name, target_name)
        # Eq. 2 starting point and anchor: U^s for every user (0 for users without source data).
        self.target_ = new_base(view, target_name, cfg.base, settings, context)
        self.target_.to(context.device)
        copy_coordinates(self.source_, self.target_, cfg.init_items)
        users = torch.arange(train.data.n_users, device=context.device)
        with torch.no_grad():
            self.register_buffer("anchor_", self.source_.user_state(users).detach().clone(),
                                 persistent=False)

        target: EmbeddingBase = self.target_
        dom = view.data[target_name]

        def loss_fn(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            u, i, extra = batch
            return target.training_loss(u, i, extra) + cfg.pull * self.coordinate_penalty(u)

        fit_stage(self, loss_fn,
                  epoch_batches(dom.interactions, dom.n_items, train.implicit, settings.n_neg),
                  settings, context=context, stage=f"finetune_{target_name}",
                  validate=validator(self, validation), parameters=trainable(target),
                  after_step=target.after_step)

    def architecture(self) -> dict[str, Any]:
        return {"source": base_spec(self.source_), "target": base_spec(self.target_)}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        self.source_ = build_base(architecture["source"])
        self.target_ = build_base(architecture["target"])
        for p in self.source_.parameters():
            p.requires_grad_(False)

    def score_new_users(self, history: NewHistory, target: str, items: torch.Tensor
                        ) -> torch.Tensor:
        """A cold-start user's target state is its source coordinates (step 3): a new user's are
        fitted from the history with the frozen source base (``serving.fold_in``)."""
        if target != self.domains_[1]:
            raise KeyError(f"CST transfers into {self.domains_[1]!r}, not {target!r}")
        return self.target_.score_items(fold_in(self.source_, history), items)

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.domains_:
            raise KeyError(f"CST was fitted for {self.domains_}, not {domain!r}")
        model = self.source_ if domain == self.domains_[0] else self.target_
        return model.score_items(model.user_state(users), torch.arange(n_items,
                                                                       device=users.device))

    def coordinate_penalty(self, users: torch.Tensor) -> torch.Tensor:
        """The pull of Eq. 2 on a batch: sum_u ||U^t_u - U^s_u||^2 / batch size."""
        diff = self.target_.user_state(users) - self.anchor_[users]
        return diff.pow(2).sum() / max(1, users.shape[0])

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        if domain not in self.domains_:
            raise KeyError(f"CST was fitted for {self.domains_}, not {domain!r}")
        model = self.source_ if domain == self.domains_[0] else self.target_
        return model(users, items)
