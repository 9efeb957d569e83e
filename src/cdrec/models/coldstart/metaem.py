"""MetaEM: meta embedding mapping for cold-start users (Zheng, Guo, Liu, Xiao, Gao;
``shared/papers/metaem.txt``), centralised. The federated form (``cdrec.federated``) runs the
same modules split between server and devices.

1. Pretrain stage, per domain (Sec. 3.3, Algorithm 1), the base :class:`MetaEmbeddingBase`:
   user embeddings U (m x k), common item embeddings V^c, a meta network g_phi that generates a
   private matrix V^p_u per user (Eq. 3-4), the user's item embeddings V_u = V^c V^p_u (Eq. 2),
   and a prediction module: r_hat_uj = MLP_user(u) . MLP_item(V_u[j]) (Eq. 5-7), trained on
   MSE (Eq. 8) + lambda/2 ||Theta||^2 (Eq. 9-10).
2. Mapping stage, in the target domain (Sec. 3.4, Algorithm 2): f_theta maps MLP^s_user(u^s)
   to u_hat^t (Eq. 11), trained task-oriented (Eq. 13-14, the default): the target rating loss
   through the frozen target prediction module, with the private items regenerated from the
   mapped embedding, V^p = g^t(u_hat^t); or distance-oriented (Eq. 12, ``objective:
   distance``): ||f(MLP^s_user(u^s)) - MLP^t_user(u^t)||^2 (the paper's Eq. 12 writes the source
   side on the right, a typo: the target is the user's target embedding).
3. Cold-start stage (Sec. 3.5): a cold user's target prediction is Eq. 13 with Eq. 11's u_hat^t.

Where the paper is ambiguous, cdrec's choices (each named by its config field):

- Shapes (Eq. 2, Table 1). The paper states V^c in R^{n x k_c} and V^p_u in R^{k_c x k_p} but
  claims O(k_c k_p + k_p n) parameters per device, which needs the n-row matrix to be k_p wide.
  cdrec makes that claim true: V^c in R^{n x k_p} (``common_dim`` = k_p = 8, what every device
  downloads), V^p_u in R^{k_p x k_c} (``private_dim`` = k_c = 32, generated from the k_p * k_c
  outputs of g), so V_u = V^c V^p_u in R^{n x k_c} and MLP_item's input is k_c wide. A device
  downloads n k_p + k_p k_c numbers (plus its user's k-vector), not n k.
- g's input. Eq. 3 feeds g the raw embedding u_i, but at cold start the paper regenerates the
  private matrix from the transferred embedding (Sec. 3.5, Eq. 13), which lives in MLP_user's
  output space (Eq. 11). cdrec feeds g MLP_user(u_i) in the pretrain stage too, so that g is one
  function on one space in both stages; the user state a transfer maps is u_hat = MLP_user(u).
- MLP_item is the paper's device parameter set (Algorithm 1, line 1: "initialize MLP_item
  randomly in user i's device"). A cold-start user's device never trains a target MLP_item (it
  has no target ratings), so per-device weights would leave every cold user with a random
  prediction module; cdrec trains one MLP_item shared by all users (in the federated form, a
  copy on every device whose gradient is aggregated like the server parameters).
- Layers: "three-layer networks with hidden units 128" and ReLU (Sec. 4.2, Eq. 4-6): each of g,
  MLP_user, MLP_item and f is Linear-ReLU-Linear-ReLU-Linear, with a ReLU on the output of
  MLP_user, MLP_item and f as Eq. 5-6 write (``output_relu``; g's output is a matrix of
  weights, left linear: Eq. 4's last ReLU would make every entry of V^p_u non-negative).
- Regularisation: lambda/2 ||Theta||^2 over all trainable parameters (Eq. 9) is Adam's
  ``weight_decay`` = lambda (1e-4, Sec. 4.2) on dense tables; these bases train with dense Adam.

Batched: a batch of (user, item) rows generates each row's V^p_u and forms only its item's
embedding V^c[j] V^p_u; no [users, items, k] tensor is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.interface import BaseConfig, EmbeddingBase, init_table
from cdrec.models.bases.registry import register_base
from cdrec.models.coldstart.transfer import TransferConfig, TransferMethod
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.nn import MLP
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class MetaEmbeddingConfig(BaseConfig):
    """Paper defaults (Sec. 4.2): k = 32, k_p = 8, k_c = 32, 128 hidden units, Adam, batch 256,
    lr searched in {1e-4, 1e-3, 1e-2}, regularisation weight 1e-4."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 256,
                                                   "lr": 0.001, "weight_decay": 1e-4,
                                                   "patience": 5}

    common_dim: int = Field(8, ge=1, description="k_p: width of the common item embeddings V^c")
    private_dim: int | None = Field(None, ge=1, description=(
        "k_c: width of a user's item embeddings V_u = V^c V^p_u (V^p_u is k_p x k_c); "
        "default: dim (the paper: 32 and 32)"))

    @property
    def k_c(self) -> int:
        return self.dim if self.private_dim is None else self.private_dim
    hidden: int = Field(128, ge=1, description="hidden units of g, MLP_user and MLP_item")
    output_relu: bool = Field(True, description="ReLU on MLP_user's and MLP_item's outputs")
    scorer: Literal["towers", "mf", "gmf"] = Field("towers", description=(
        "the prediction module (Fig. 3's bases): MLP_user/MLP_item towers (Eq. 5-7, the "
        "paper's model; a DNN two-tower), an inner product u . V_u[j] (MF) or "
        "h . (u * V_u[j]) with a learned h (GMF); mf and gmf need private_dim == dim"))
    # BaseConfig's row-wise L2 (``reg``) and sparse steps do not apply: Eq. 9 is weight decay.
    reg: float = Field(0.0, ge=0, description="unused by this base (see weight_decay)")
    sparse: bool = Field(False, description="dense Adam (Eq. 9 as weight decay needs it)")


# (user, item) pairs scored together by MetaEmbeddingBase.score_items: bounds its memory.
SCORE_PAIRS = 1 << 16


def three_layer(dim_in: int, hidden: int, dim_out: int, output_relu: bool) -> MLP:
    """Linear-ReLU-Linear-ReLU-Linear(-ReLU): the paper's "three-layer network"."""
    return MLP([dim_in, hidden, hidden, dim_out], activation=nn.ReLU,
               output_activation=output_relu)


class ElementwiseScale(nn.Module):
    """x -> h * x with a learned h (starting at 1): GMF's output weights (He et al., 2017)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.h = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h * x


def item_tower(config: MetaEmbeddingConfig) -> nn.Module:
    """MLP_item of ``config``'s prediction module (Eq. 6): what a federated device rebuilds from
    the config to run the downloaded weights."""
    if config.scorer == "towers":
        return three_layer(config.k_c, config.hidden, config.dim, config.output_relu)
    return ElementwiseScale(config.dim) if config.scorer == "gmf" else nn.Identity()


def meta_scores(state: torch.Tensor, private: torch.Tensor, common: torch.Tensor,
                item_mlp: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """r_hat = u_hat . MLP_item(V^c[j] V^p_u) (Eq. 2, 6, 7): ``state`` ``[..., D]``, ``private``
    ``[..., k_p, k_c]``, ``common`` (the rows V^c[j]) ``[..., k_p]``, broadcast together. The
    one formula the centralised model and a federated device both compute."""
    item = (common.unsqueeze(-2) @ private).squeeze(-2)            # V_u[j], [..., k_c]
    return (state * item_mlp(item)).sum(-1)


@register_base("MetaEmbedding")
class MetaEmbeddingBase(EmbeddingBase):
    """MetaEM's pretrain-stage model of one domain (module docstring, step 1). The user state
    is u_hat = MLP_user(u) (``dim`` wide)."""

    Config = MetaEmbeddingConfig
    config: MetaEmbeddingConfig
    transferable = False  # MetaEM's own base: no EMCDR_/TMCDR_/PTUPCDR_ variants over it

    def __init__(self, n_users: int, n_items: int, config: MetaEmbeddingConfig, *,
                 implicit: bool, global_mean: float = 0.0,
                 generator: torch.Generator | None = None, init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, generator=generator)
        if config.sparse:
            raise ValueError("MetaEmbedding trains with dense Adam (its L2 is weight_decay, "
                             "Eq. 9): sparse must be false")
        k, kp, kc = config.dim, config.common_dim, config.k_c
        if config.scorer != "towers" and kc != k:
            raise ValueError(f"scorer {config.scorer!r} takes u . V_u[j]: private_dim ({kc}) "
                             f"must equal dim ({k})")
        self.user_factors = init_table(n_users, k, init_std, generator)      # U
        self.item_factors = init_table(n_items, kp, init_std, generator)     # V^c
        self.meta = three_layer(k, config.hidden, kp * kc, output_relu=False)  # g_phi, Eq. 4
        self.user_mlp: nn.Module = (three_layer(k, config.hidden, k, config.output_relu)  # Eq. 5
                                    if config.scorer == "towers" else nn.Identity())
        # Eq. 6; MF: r = u . V_u[j]; GMF: r = h . (u * V_u[j])
        self.item_mlp: nn.Module = item_tower(config)

    @property
    def user_dim(self) -> int:
        return self.config.dim

    def user_state(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_mlp(self.user_factors(users))

    def private_items(self, state: torch.Tensor) -> torch.Tensor:
        """V^p_u = reshape(g(u_hat)) (Eq. 3), ``[..., k_p, k_c]``."""
        return self.meta(state).unflatten(-1, (self.config.common_dim, self.config.k_c))

    def score_with(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Eq. 2, 6, 7 for ``[B, D]`` with ``[B]``, or ``[B, 1, D]`` with ``[B, n]`` (V^p_u
        computed once per state row)."""
        return meta_scores(state, self.private_items(state), self.item_factors(items),
                           self.item_mlp)

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Every user of ``state`` against every item, in chunks of items: each (user, item)
        pair runs MLP_item on its own embedding V_u[j], so the hidden activations are held for
        about 64 k pairs at a time, not for the whole block."""
        private = self.private_items(state).unsqueeze(1)          # [U, 1, k_p, k_c]
        per_chunk = max(1, SCORE_PAIRS // max(1, state.shape[0]))
        common = self.item_factors(items)
        return torch.cat([meta_scores(state.unsqueeze(1), private, chunk.unsqueeze(0),
                                      self.item_mlp)
                          for chunk in common.split(per_chunk)], dim=1)

    def penalty(self, users: torch.Tensor, items: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        return torch.zeros((), device=users.device)  # Eq. 9 is Adam's weight decay

    def reset_users(self, users: torch.Tensor) -> None:
        with torch.no_grad():
            self.user_factors.weight[users] = 0.0

    def constrain_state(self, state: torch.Tensor) -> torch.Tensor:
        """u_hat is MLP_user's output: non-negative with ``output_relu`` (towers)."""
        towers = self.config.scorer == "towers"
        return state.clamp_min(0.0) if towers and self.config.output_relu else state


class MetaEMConfig(TransferConfig, TrainingConfig):
    """The mapping stage's settings; the pretrain stage's are ``base_config`` (the
    ``MetaEmbedding`` base). Batch 256 and regularisation 1e-4 are the paper's (Sec. 4.2; lambda
    of Eq. 14 is Adam's weight decay on theta); lr is searched in {1e-4, 1e-3, 1e-2} there."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 256,
                                                   "lr": 0.001, "weight_decay": 1e-4,
                                                   "patience": 10}

    base: str = Field("MetaEmbedding", description="the pretrain-stage model of both domains")
    objective: Literal["task", "distance"] = Field("task", description=(
        "task-oriented mapping (Eq. 13-14) or distance-oriented (Eq. 12)"))
    hidden: int = Field(128, ge=1, description="hidden units of the mapping network f")
    output_relu: bool | None = Field(None, description=(
        "ReLU on f's output; default: when the space it maps into is non-negative (MLP_user's "
        "output under the towers scorer with output_relu)"))


@register("MetaEM")
class MetaEM(TransferMethod):
    """Meta-generated private item embeddings per user, mapped task-oriented (module
    docstring)."""

    Config = MetaEMConfig
    config: MetaEMConfig

    def _new_transfer(self) -> nn.Module:
        relu = self.config.output_relu
        if relu is None:
            target = self.config.base_settings()
            relu = bool(getattr(target, "scorer", "towers") == "towers"
                        and getattr(target, "output_relu", False))
        return three_layer(self.source_.user_dim, self.config.hidden, self.target_.user_dim,
                           relu)

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        source: EmbeddingBase = self.source_
        target: EmbeddingBase = self.target_
        self.transfer_ = self._new_transfer().to(context.device)
        if cfg.objective == "distance":
            def distance(batch: Sequence[torch.Tensor]) -> torch.Tensor:      # Eq. 12
                (u,) = batch
                return (self.transfer_(source.user_state(u))
                        - target.user_state(u)).pow(2).sum(-1).mean()

            fit_stage(self, distance, lambda gen: [overlap], cfg, context=context,
                      stage="mapping", validate=validator(self, validation),
                      parameters=trainable(self.transfer_))
            return
        # Eq. 13-14: the training overlap users' target ratings through the frozen target
        # prediction module, V^p regenerated from the mapped embedding inside score_with.
        _, target_name = train.transfer_domains()
        tgt = train.data[target_name]
        rows = tgt.interactions.select(torch.isin(tgt.interactions.user, overlap))
        batches = epoch_batches(rows, tgt.n_items, train.implicit,
                                cfg.base_settings().n_neg)

        def task(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            u, i, r = batch
            return target.loss_with(self.transferred_state(u), i, r)

        fit_stage(self, task, batches, cfg, context=context, stage="mapping",
                  validate=validator(self, validation), parameters=trainable(self.transfer_))
