"""UCLR: user-aware contrastive learning for robust multi-target cross-domain recommendation
(Yang, Jian, Wang, Lu, Shen, Wang, Tang, Zhang, "Not All Embeddings are Created Equal: Towards
Robust Cross-domain Recommendation via Contrastive Learning", WWW 2024; Algorithm 1), with the
ablations of its Tables 4-5 as registered models.

1. Pretrained global embedding, PGE (Sec. 3.3, Eq. 2): one BPR-MF over the items of every
   domain (``merge_domains``), m = 128, lambda_U = lambda_V = 1e-5, batch 2048, Adam lr 1e-3:
   the existing ``BPR`` base, not a second BPR.
2. Contrastive dual-stream collaborative autoencoder (Sec. 3.4): a batch of users' global
   embeddings E and their masked copy E' (a ratio of the users' rows set to zero) go through one
   shared encoder (``e = enc(E)``, ``e' = enc(E')``) and decoder (``E_hat``, ``E_hat'``); the
   user-aware contrastive loss with a temperature per user (Eq. 3, trained as iSogCLR trains it:
   ``cdrec.nn.contrastive.IndividualTemperatures``, whose docstring says why Eq. 3's literal
   temperature gradient cannot be used), the reconstruction loss (Eq. 4) and their combination
   with alpha = 1e-3 (Eq. 5).
3. Domain-aware LoRA finetuning (Sec. 3.5, Eq. 6-7), per domain d: the user table becomes
   W = W_0 + B A (``cdrec.nn.lora.LoRAEmbedding``, W_0 the frozen PGE table), trained on d's
   BPR loss (Eq. 6) plus the combined loss (Eq. 5) of users drawn uniformly, a batch's worth
   per step (not the BPR rows' users, whose number grows with their activity).

Scoring: r_ij = E_hat_i . I_j with E_hat = dec(enc(E_i)) (the reconstruction stream, unmasked):
the latent e is 32-wide and cannot meet 128-wide items, and the ablation rows PGE+AE ... differ
from PGE without any finetuning, so the autoencoder's output is what they score. After
finetuning, E_i is row i of W and I_j the domain's finetuned item row.

The ablations (Tables 4-5), each registered: ``PGE`` (stage 1), ``PGE+AE`` (a single-stream
autoencoder on reconstruction only), ``PGE+CL-AE`` (both streams, one global temperature:
``temperature.tau_init``, fixed), ``PGE+UCL-AE`` (per-user temperatures), ``UCLR`` (+ LoRA).

cdrec's choices where the paper is silent (docs/dev/uclr_reference_notes.md, Sec. 7-8):

- iSogCLR's rho, gamma, eta, beta and tau_init are not in the paper; the defaults are the
  iSogCLR authors' README values for one temperature per sample (rho 0.4, eta 0.03, beta 0.5,
  gamma 0.8, tau_init 0.1), tuned on validation; the bounds [1e-5, 1] are the paper's. Cosine
  similarity; Eq. 3's one direction (``temperature.symmetric`` adds the reverse).
- The mask ratio and LoRA rank are not given: 0.3 (the paper's example) and 8, tuned.
- Encoder Linear(m, 128)-ReLU-Linear(128, 32), the decoder mirrored ("hidden [128, 32]").
- Masks are Bernoulli(mask_ratio) per user, redrawn every epoch.
- BPR: one sampled negative per positive from the positive's own domain (as NCF-joint), the
  squared L2 penalty on the batch's rows (Eq. 2 and 6 write an unsquared norm and a sum over
  every unobserved item). Losses are batch means: Eq. 5's and Eq. 7's sums over users would
  weigh them by the batch size, which Adam's step does not need.
- The finetune trains A, B, the autoencoder and domain d's items (Eq. 6 regularises I_j, and the
  text finetunes "the whole framework"); ``finetune.autoencoder`` / ``finetune.items`` freeze
  them for the literal "only A and B" reading. Each domain starts from copies of the stage-2
  autoencoder and temperatures.
- Every stage stops early on the validation positives (the stage-3 finetune of d on d's own),
  never on test; the number of epochs is not in the paper.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.cache import BaseCache
from cdrec.models.bases.interface import FactorBase
from cdrec.models.bases.mf import MFConfig
from cdrec.models.bases.pretrain import cached_stage, new_base, users_without_data
from cdrec.models.bases.registry import base_spec, build_base
from cdrec.models.bases.single_domain import merge_domains, merged_epoch_batches
from cdrec.models.recommender import ModelConfig, Recommender, validation_for, validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.nn.contrastive import IndividualTemperatures
from cdrec.nn.layers import MLP
from cdrec.nn.lora import LoRAEmbedding
from cdrec.nn.losses import bpr_loss_terms, l2_penalty
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult, trainable

Streams = Literal["none", "single", "dual"]


class PGEConfig(MFConfig):
    """The pretrained global embedding: BPR-MF over every domain's items (Sec. 3.3, 4.2)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 2048,
                                                   "lr": 1e-3, "patience": 5}
    dim: int = Field(128, ge=1, description="embedding size m (Sec. 4.2: 128)")
    reg: float = Field(1e-5, ge=0, description="lambda_U = lambda_V (Eq. 2: 1e-5)")
    n_neg: int = Field(1, ge=1, description="sampled negatives per positive")
    use_bias: bool = Field(False, description="r_ij = E_i . I_j has no bias (Eq. 2)")


class TemperatureConfig(ModelConfig):
    """Per-user temperatures trained as iSogCLR (``cdrec.nn.contrastive``); UCLR gives only the
    bounds. In PGE+CL-AE every user keeps ``tau_init``."""

    tau_init: float = Field(0.1, gt=0, le=1, description="starting (and CL-AE's global) tau")
    tau_min: float = Field(1e-5, gt=0, description="lower bound (Sec. 4.2: 1e-5)")
    tau_max: float = Field(1.0, gt=0, description="upper bound (Sec. 4.2: 1)")
    rho: float = Field(0.4, description=(
        "iSogCLR's KL radius: a temperature settles where KL(p_i || uniform) = rho; Eq. 3 "
        "read literally is rho = log(batch - 1), every tau then sinking to tau_min"))
    gamma: float = Field(0.8, gt=0, le=1, description="weight of a batch's negative mass in u")
    eta: float = Field(0.03, gt=0, description="step size of the temperatures")
    beta: float = Field(0.5, gt=0, le=1, description="weight of the new gradient in tau's momentum")
    grad_clip: float = Field(3.0, gt=0, description="clip of tau's gradient")
    symmetric: bool = Field(False, description=(
        "also contrast e' against e and average the two directions (false: Eq. 3's single "
        "direction, anchors from the unmasked stream; in the reverse direction every masked "
        "user's anchor is the same enc(0))"))


class AutoencoderConfig(TrainingConfig):
    """The contrastive dual-stream collaborative autoencoder (Sec. 3.4, 4.2)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 2048,
                                                   "lr": 1e-3, "patience": 5}
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 32], min_length=1,
                                      description="encoder sizes after m (decoder mirrored)")
    mask_ratio: float = Field(0.3, ge=0, lt=1, description="share of users masked in E'")
    alpha: float = Field(1e-3, ge=0, description="weight of the reconstruction loss (Eq. 5)")
    temperature: TemperatureConfig = Field(default_factory=lambda: TemperatureConfig.model_validate({}))


class FinetuneConfig(TrainingConfig):
    """Domain-aware LoRA finetuning (Sec. 3.5)."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 2048,
                                                   "lr": 1e-3, "patience": 5}
    rank: PositiveInt = Field(8, description="LoRA rank r of W = W_0 + B A")
    items: bool = Field(True, description="finetune the domain's item embeddings too")
    autoencoder: bool = Field(True, description="finetune the autoencoder too")


class UCLRConfig(ModelConfig):
    """UCLR's three stages; each ablation uses the stages it has."""

    pge: PGEConfig = Field(default_factory=lambda: PGEConfig.model_validate({}))
    autoencoder: AutoencoderConfig = Field(default_factory=lambda: AutoencoderConfig.model_validate({}))
    finetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig.model_validate({}))

    @model_validator(mode="after")
    def _rank_fits(self) -> UCLRConfig:
        # Checked here, not after two stages have trained.
        if self.finetune.rank > self.pge.dim:
            raise ValueError(f"finetune.rank {self.finetune.rank} exceeds pge.dim "
                             f"{self.pge.dim}: W = W_0 + B A would not be a low-rank update")
        return self


class CollaborativeAutoencoder(nn.Module):
    """The shared-weight encoder and decoder of both streams (Sec. 3.4)."""

    def __init__(self, dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.encoder = MLP([dim, *hidden], activation=nn.ReLU)
        self.decoder = MLP([*reversed(hidden), dim], activation=nn.ReLU)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """E_hat = dec(enc(E)), the reconstruction stream: what is scored."""
        return self.decoder(self.encoder(embeddings))


class DomainHead(nn.Module):
    """What the LoRA finetune of one domain learns: W = W_0 + B A, the domain's items, and its
    copies of the autoencoder and the temperatures."""

    def __init__(self, users: LoRAEmbedding, items: nn.Embedding,
                 autoencoder: CollaborativeAutoencoder,
                 temperatures: IndividualTemperatures | None) -> None:
        super().__init__()
        self.users, self.items, self.autoencoder = users, items, autoencoder
        self.temperatures = temperatures


def combined_loss(autoencoder: CollaborativeAutoencoder, temperatures: IndividualTemperatures,
                  embeddings: torch.Tensor, masked: torch.Tensor, users: torch.Tensor,
                  alpha: float) -> torch.Tensor:
    """Eq. 5 on a batch of distinct users (means over the batch): the user-aware contrastive
    loss of e = enc(E) against e' = enc(E') (Eq. 3) plus alpha times Eq. 4,
    ||E_hat - E||^2 + ||E_hat' - E||^2. ``masked`` marks the users whose E' row is zero."""
    masked_input = embeddings * (~masked).unsqueeze(1).to(embeddings.dtype)
    e, e_masked = autoencoder.encoder(embeddings), autoencoder.encoder(masked_input)
    reconstruction = ((autoencoder.decoder(e) - embeddings).pow(2).sum(1)
                      + (autoencoder.decoder(e_masked) - embeddings).pow(2).sum(1)).mean()
    if users.numel() < 2:  # a lone user has no negatives
        return alpha * reconstruction
    return temperatures(e, e_masked, users) + alpha * reconstruction


@register("UCLR")
class UCLR(Recommender):
    """UCLR (see module docstring): PGE, the contrastive dual-stream autoencoder with per-user
    temperatures, and domain-aware LoRA finetuning."""

    Config = UCLRConfig
    config: UCLRConfig
    supports = frozenset({"leave_one_out"})
    transient_attributes = frozenset({"stages_"})
    streams: ClassVar[Streams] = "dual"
    individual_temperatures: ClassVar[bool] = True
    lora: ClassVar[bool] = True

    pge: FactorBase  # the BPR base over the merged item index
    autoencoder: CollaborativeAutoencoder | None
    temperatures: IndividualTemperatures | None
    heads: nn.ModuleDict
    offsets_: dict[str, int]
    n_items_: dict[str, int]
    stages_: list[StageResult]

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg, names = self.config, train.domains
        if len(names) < 2:
            raise ValueError(f"{type(self).__name__} is multi-target: it needs two or more "
                             f"domains sharing users, got {names}")
        merged, offsets = merge_domains(train, names)
        self.offsets_ = offsets
        self.n_items_ = {name: train.data[name].n_items for name in names}
        self.autoencoder, self.temperatures, self.heads = None, None, nn.ModuleDict()
        # Stage 1 (Eq. 2). Registered before training so validation can call predict. While it
        # trains, every model of the family scores the PGE alone, so one split's PGE is trained
        # once and shared through the base cache (the ablations, the trials of a search).
        key = BaseCache.key(train, names[0], "UCLR-PGE", cfg.pge, context, extra=(
            tuple(id(train.data[n].interactions) for n in names), id(validation)))
        pge = new_base(merged, names[0], "BPR", cfg.pge, context)
        assert isinstance(pge, FactorBase)
        self.pge = pge
        pge.reset_users(users_without_data(merged, names[0]))
        self.to(context.device)
        self.stages_ = [cached_stage(
            pge, key, context,
            lambda: fit_stage(self, lambda batch: pge.training_loss(*batch),
                              merged_epoch_batches(train, offsets, cfg.pge.n_neg), cfg.pge,
                              context=context, stage="pge", validate=validator(self, validation),
                              after_step=pge.after_step),
            keep_alive=([train.data[n].interactions for n in names], validation))]
        pge.requires_grad_(False)
        if self.streams == "none":
            return
        active = torch.unique(torch.cat([train.data[n].interactions.user for n in names]))
        self._fit_autoencoder(active, validation, context)
        if self.lora:
            for name in names:
                self._finetune(train, name, active, validation, context)

    # -- stage 2: the contrastive dual-stream collaborative autoencoder (Sec. 3.4) -------------

    def _fit_autoencoder(self, active: torch.Tensor, validation: Evaluator | None,
                         context: FitContext) -> None:
        cfg = self.config.autoencoder
        table = self.pge.user_factors.weight
        self.autoencoder = ae = CollaborativeAutoencoder(table.shape[1], cfg.hidden)
        if self.streams == "dual":
            self.temperatures = self._new_temperatures(table.shape[0])
        self.to(context.device)

        def loss(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            users, masked = batch
            embeddings = table.detach()[users]
            if self.streams == "single":  # PGE+AE: reconstruction only
                return (ae(embeddings) - embeddings).pow(2).sum(1).mean()
            assert self.temperatures is not None
            return combined_loss(ae, self.temperatures, embeddings, masked, users, cfg.alpha)

        self.stages_.append(fit_stage(self, loss, self._masked_users(active, cfg.mask_ratio),
                                      cfg, context=context, stage="autoencoder",
                                      validate=validator(self, validation),
                                      parameters=trainable(ae)))

    def _new_temperatures(self, n_users: int) -> IndividualTemperatures:
        t = self.config.autoencoder.temperature
        return IndividualTemperatures(
            n_users, tau_init=t.tau_init, tau_min=t.tau_min, tau_max=t.tau_max, rho=t.rho,
            gamma=t.gamma, eta=t.eta, beta=t.beta, grad_clip=t.grad_clip,
            learn=self.individual_temperatures, symmetric=t.symmetric)

    @staticmethod
    def _masked_users(users: torch.Tensor, ratio: float
                      ) -> Callable[[torch.Generator], list[torch.Tensor]]:
        """Each epoch: every user once, with a fresh Bernoulli(ratio) mask."""
        return lambda gen: [users, torch.rand(users.numel(), generator=gen) < ratio]

    # -- stage 3: domain-aware LoRA finetuning (Sec. 3.5, Eq. 6-7) ----------------------------

    def _finetune(self, train: TrainView, name: str, active: torch.Tensor,
                  validation: Evaluator | None, context: FitContext) -> None:
        cfg, pge_cfg = self.config.finetune, self.config.pge
        assert self.autoencoder is not None and self.temperatures is not None
        offset, n_items = self.offsets_[name], self.n_items_[name]
        item_rows = self.pge.item_factors.weight.detach()[offset:offset + n_items]
        head = DomainHead(
            LoRAEmbedding(self.pge.user_factors.weight, cfg.rank, generator=context.generator,
                          share=True),  # W_0 is the frozen PGE table itself, not a copy
            nn.Embedding.from_pretrained(item_rows.clone(), freeze=not cfg.items),
            copy.deepcopy(self.autoencoder).requires_grad_(cfg.autoencoder),
            copy.deepcopy(self.temperatures))
        self.heads[name] = head  # before training: validation scores this domain with it
        self.to(context.device)
        dom = train.data[name]
        draw = epoch_batches(dom.interactions, n_items, True, pge_cfg.n_neg)
        ratio, alpha = self.config.autoencoder.mask_ratio, self.config.autoencoder.alpha

        def epoch_data(gen: torch.Generator) -> list[torch.Tensor]:
            users, positives, negatives = draw(gen)
            # Eq. 5's users: drawn uniformly from the active users, one per row, not the rows'
            # own users, so a user's contrastive weight and temperature steps do not grow with
            # their number of interactions (the activity bias UCLR sets out to remove).
            others = active[torch.randint(active.numel(), (users.numel(),), generator=gen)]
            return [users, positives, negatives, others,
                    torch.rand(users.numel(), generator=gen) < ratio]

        def loss(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            users, positives, negatives, others, masked = batch
            rows = head.users(users)
            state = head.autoencoder(rows)
            pos_items, neg_items = head.items(positives), head.items(negatives)
            pos = (state * pos_items).sum(-1)
            neg = (state.unsqueeze(1) * neg_items).sum(-1)
            bpr = bpr_loss_terms(pos, neg).mean()  # Eq. 6
            penalty = l2_penalty(rows, pos_items,
                                 neg_items.flatten(0, 1) / negatives.shape[1] ** 0.5)
            # Eq. 5 on the batch's distinct drawn users (a user twice would be its own negative).
            distinct, first = _first_occurrences(others)
            assert head.temperatures is not None
            combined = combined_loss(head.autoencoder, head.temperatures, head.users(distinct),
                                     masked[first], distinct, alpha)
            return bpr + pge_cfg.reg * penalty + combined  # Eq. 7

        self.stages_.append(fit_stage(self, loss, epoch_data, cfg, context=context,
                                      stage=f"finetune_{name}",
                                      validate=validator(self, validation_for(validation, name)),
                                      parameters=trainable(head)))

    # -- scoring -----------------------------------------------------------------------------

    def _state_and_items(self, domain: str, users: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The scored user vectors ``[U, m]`` and the domain's item table ``[n_items, m]``."""
        self.check_fitted()
        if domain not in self.offsets_:
            raise KeyError(f"{type(self).__name__} was fitted on {list(self.offsets_)}, "
                           f"not {domain!r}")
        if domain in self.heads:
            head = self._head(domain)
            return head.autoencoder(head.users(users)), head.items.weight
        state = self.pge.user_factors.weight[users]
        if self.autoencoder is not None:
            state = self.autoencoder(state)
        offset = self.offsets_[domain]
        return state, self.pge.item_factors.weight[offset:offset + self.n_items_[domain]]

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        # A user's vector goes through the autoencoder once, not once per scored pair (the
        # sampled evaluation asks for 100 pairs per user).
        distinct, inverse = torch.unique(users, return_inverse=True)
        state, item_table = self._state_and_items(domain, distinct)
        return (state[inverse] * item_table[items]).sum(-1)

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        state, item_table = self._state_and_items(domain, users)
        return state @ item_table[:n_items].T

    def user_temperatures(self, domain: str | None = None) -> torch.Tensor:
        """The learned temperature of every user (``[n_users]``): the stage-2 values, or those
        the finetune of ``domain`` ended with."""
        self.check_fitted()
        if self.temperatures is None or not self.temperatures.learn:
            raise ValueError(f"{type(self).__name__} has no per-user temperatures (they are "
                             "learned by UCLR and PGE+UCL-AE)")
        if domain is not None and domain not in self.heads:
            raise KeyError(f"{type(self).__name__} has no finetuned domain {domain!r}; it has "
                           f"{sorted(self.heads) or 'none'}")
        source = self._head(domain).temperatures if domain is not None else self.temperatures
        assert source is not None
        return source.tau.detach().clone()

    def _head(self, domain: str) -> DomainHead:
        head = self.heads[domain]
        assert isinstance(head, DomainHead)
        return head

    # -- saving and loading -------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        table = self.pge.user_factors.weight
        return {"pge": base_spec(self.pge), "offsets": dict(self.offsets_),
                "n_items": dict(self.n_items_), "n_users": int(table.shape[0]),
                "autoencoder": self.autoencoder is not None,
                "temperatures": self.temperatures is not None, "heads": list(self.heads)}

    def _build(self, architecture: Mapping[str, Any]) -> None:
        pge = build_base(architecture["pge"])
        assert isinstance(pge, FactorBase)
        self.pge = pge
        self.offsets_ = dict(architecture["offsets"])
        self.n_items_ = dict(architecture["n_items"])
        n_users, dim = int(architecture["n_users"]), self.config.pge.dim
        hidden = self.config.autoencoder.hidden
        self.autoencoder = (CollaborativeAutoencoder(dim, hidden)
                            if architecture["autoencoder"] else None)
        self.temperatures = (self._new_temperatures(n_users)
                             if architecture["temperatures"] else None)
        self.heads = nn.ModuleDict({
            # W_0 shares the PGE table's storage: loading the PGE loads it.
            name: DomainHead(LoRAEmbedding(pge.user_factors.weight, self.config.finetune.rank,
                                           share=True),
                             nn.Embedding(self.n_items_[name], dim),
                             CollaborativeAutoencoder(dim, hidden),
                             self._new_temperatures(n_users))
            for name in architecture["heads"]})


def _first_occurrences(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ``values`` and the index of each one's first occurrence."""
    distinct, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((distinct.numel(),), values.numel(), dtype=torch.long,
                       device=values.device)
    first.scatter_reduce_(0, inverse, torch.arange(values.numel(), device=values.device),
                          reduce="amin")
    return distinct, first


@register("PGE+UCL-AE")
class PGEUCLAE(UCLR):
    """UCLR without the LoRA finetune (Tables 4-5, "PGE + UCL-AE")."""

    lora = False


@register("PGE+CL-AE")
class PGECLAE(PGEUCLAE):
    """Both streams and the contrastive loss with one global, fixed temperature
    (``autoencoder.temperature.tau_init``) (Tables 4-5, "PGE + CL-AE")."""

    individual_temperatures = False


@register("PGE+AE")
class PGEAE(PGEUCLAE):
    """A single-stream autoencoder on reconstruction only (Tables 4-5, "PGE + AE")."""

    streams = "single"


@register("PGE")
class PGE(PGEUCLAE):
    """The pretrained global embedding alone: BPR-MF over every domain's items (Tables 4-5)."""

    streams = "none"
