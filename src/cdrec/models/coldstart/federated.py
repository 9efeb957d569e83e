"""MetaEM trained federated (``FedMetaEM``, Algorithms 1 and 2 of ``shared/papers/metaem.txt``)
and the federated MF baseline it is compared with (``FedMF``), on Flower or in an exact
vectorised simulation of the same rounds.

Both are their centralised model with every training stage replaced by federated rounds
(``cdrec.federated.protocol``): the server holds the user embeddings and the networks, each
user's device holds that user's ratings, and a round samples ``devices_per_round`` devices.
Rounds run in the shared training loop: an epoch is one pass over the stage's devices in a
seeded random order, cut into rounds (the loop's batches), and :class:`FederatedRound` is its
step. What stays as in the centralised model, and why:

- Early stopping of a pretrain stage uses a held-out ``holdout`` share of each domain's training
  ratings, as ``fit_base`` does; the mapping stage uses the validation users. Both are computed
  on the server here. In a deployment each device would report its own held-out error in an
  evaluation round (not built: the experiment's numbers are the same either way).
- MF's global mean is one scalar taken from the training ratings (a federated sum of ratings and
  counts gives the same number).
- L2 is Adam's weight decay on the server's parameters (Eq. 9 and 14 for MetaEM; for FedMF the
  same, instead of the centralised MF's row-wise penalty on a batch).

FedMetaEM's devices download V^c (n x k_p), their V^p_u (k_p x k_c), their u_hat (k) and
MLP_item; FedMF's download the whole item matrix V (n x k) and its biases, and their user
vector. Both upload the gradients of what they downloaded (dense, so no item id travels).

``engine: flower`` (the default) runs the rounds as Flower messages between a ServerApp and one
ClientApp node per device in Flower's simulation engine; ``engine: vectorised`` computes every
sampled device's local step as one batched computation, with the same devices, failures and
(to float tolerance) the same parameters (``tests/test_federated.py``). Per-round bytes,
failures and seconds are the model's ``rounds_`` (stage ``rounds_<stage>``), which ``cdrec run``
writes to ``rounds/<label>_seed<seed>.csv`` in the run directory.
"""

from __future__ import annotations

import tempfile
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys
from cdrec.models.bases.holdout import holdout_validator
from cdrec.models.bases.interface import EmbeddingBase
from cdrec.models.bases.mf import MFBase
from cdrec.models.bases.pretrain import new_base, users_without_data
from cdrec.models.coldstart.metaem import MetaEM, MetaEmbeddingBase, MetaEMConfig
from cdrec.models.coldstart.transfer import (
    TransferConfig,
    TransferMethod,
    mapping_network,
)
from cdrec.models.recommender import ModelConfig, validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, Validate, train_loop, trainable


class FederationConfig(ModelConfig):
    """How the rounds run (shared by FedMetaEM and FedMF)."""

    engine: Literal["flower", "vectorised", "deployment"] = Field("flower", description=(
        "Flower's simulation engine (one ClientApp node per device), the exact vectorised "
        "simulation of the same rounds, or a Flower deployment (inside cdrec.federated.app's "
        "ServerApp, started by `flwr run`)"))
    devices_per_round: int = Field(256, ge=1, description="devices sampled per round")
    failure_rate: float = Field(0.0, ge=0, lt=1, description=(
        "fraction of a round's devices that fail (seeded fault injection)"))
    round_timeout: float | None = Field(None, gt=0, description=(
        "seconds the server waits for a round's replies (None: all of them)"))
    workers: int = Field(2, ge=1, description="Flower simulation: Ray actors (one CPU each)")
    record_dir: str | None = Field(None, description=(
        "write every message a device sends into this directory (privacy checks)"))
    secure_aggregation: bool = Field(False, description=(
        "aggregate the shared gradients (V^c, MLP_item; V for FedMF) with Flower's SecAgg+: "
        "the server sees only their mean over a round's devices"))
    secure_shares: int = Field(5, ge=3, description=(
        "SecAgg+: devices each device shares its secrets with (odd)"))
    secure_threshold: int = Field(3, ge=2, description=(
        "SecAgg+: shares needed to unmask (below secure_shares)"))
    leakage_rounds: int = Field(3, ge=0, description=(
        "measure, over the first N rounds, which rated items the server can read off what it "
        "receives (Flower engines; reported as leakage_precision / leakage_recall)"))


def leakage(attributed: Sequence[tuple[str, int, torch.Tensor]], store: Any,
            prefix: str = "leakage") -> dict[str, float]:
    """How much of a device's item set the server can read off what it receives: per (round,
    device), the items the server attributes to the device (for ``leakage``: the nonzero
    gradient rows of the device's upload, or of the round's SecAgg+ aggregate; for
    ``subspace``: the items whose V^c row lies in the column space of the device's plain
    dL/dV^p_u) against those it rated. Precision is over the attributions that name any item
    (an all-zero gradient names none), recall over all. Precision 1 and recall 1: the server
    knows the device's items exactly. The truth comes from the simulation's device data: a
    deployment's server has none, so nothing is measured there."""
    if not attributed:
        return {}
    part = store.partition_of()
    precision, recall = [], []
    for domain, user, items in attributed:
        rated = torch.unique(store.device(part[user], domain).items)
        hit = torch.isin(items, rated).sum().item()
        if items.numel():
            precision.append(hit / items.numel())
        recall.append(hit / max(rated.numel(), 1))
    return {f"{prefix}_precision": sum(precision) / max(len(precision), 1),
            f"{prefix}_recall": sum(recall) / len(recall), f"{prefix}_uploads": len(recall)}


def constant_epoch(devices: torch.Tensor) -> Callable[[torch.Generator], list[torch.Tensor]]:
    """The loop's epoch data of a federated stage: its devices (the loop shuffles them)."""
    return lambda generator: [devices]


class FederatedRound:
    """The training loop's step for one federated stage: the batch is the round's devices.

    A round's id is ``<stage>:<count>``, the count kept in the step's state, so a resumed stage
    goes on with the same ids (and, under fault injection, fails the same devices); the
    stage's first ``leakage_rounds`` rounds record what the server can read off them. After a
    resume, the log holds the rounds run since."""

    def __init__(self, stage: Any, transport: Any, domain: str, log: list[dict[str, Any]],
                 name: str, leakage_rounds: int = 0) -> None:
        self.stage, self.transport, self.domain = stage, transport, domain
        self.log, self.name, self.leakage_rounds = log, name, leakage_rounds
        self.count = 0

    def __call__(self, batch: Sequence[torch.Tensor]) -> Mapping[str, torch.Tensor]:
        (users,) = batch
        self.count += 1
        result = self.transport.round(self.stage, self.domain, users.cpu(),
                                      f"{self.name}:{self.count}",
                                      leakage=self.count <= self.leakage_rounds)
        if result.n_rows > 0:
            self.stage.apply(result.users, result.per_user_grads, result.shared_grads,
                             result.loss)
        self.log.append({
            "stage": f"rounds_{self.name}", "round": self.count,
            "sampled": result.sampled, "failed": result.failed, "rows": result.n_rows,
            "loss": result.loss, "seconds": result.seconds, "clipped": result.clipped,
            "bytes_down_per_device": (sum(result.bytes_down) / len(result.bytes_down)
                                      if result.bytes_down else float("nan")),
            "bytes_up_per_device": (sum(result.bytes_up) / len(result.bytes_up)
                                    if result.bytes_up else float("nan"))})
        return {"loss": torch.tensor(result.loss)}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.stage.state_dict(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage.load_state_dict(state["optimizer"])
        self.count = int(state["count"])


class FederatedTransfer(TransferMethod):
    """A transfer method whose two pretrain stages and mapping stage run as federated rounds.
    Subclasses give the stages (``_pretrain_stage``, ``_mapping_stage``)."""

    config: Any
    rounds_: list[dict[str, Any]]
    _transport: Any  # the fit's transport, while the mapping stage runs

    @abstractmethod
    def _pretrain_stage(self, base: EmbeddingBase) -> Any:
        """The server side (a ``FederatedStage``) of pretraining ``base`` in rounds."""

    @abstractmethod
    def _mapping_stage(self) -> Any:
        """The server side (a ``FederatedStage``) of training ``transfer_`` in rounds."""

    def device_view(self, train: TrainView, context: FitContext
                    ) -> tuple[TrainView, TrainView, dict[str, Interactions], torch.Tensor]:
        """The view the bases train on, the devices' share of it (without the bases' held-out
        ratings, which drive their early stopping), those held-out ratings, and the overlap
        users. Draws the hold-out from ``context.generator``: the same seed gives the same
        devices (``cdrec federated-devices`` writes a deployment's with it)."""
        source, target = train.transfer_domains()
        overlap, view = self.overlap_view(train)
        settings = self.config.base_settings()
        held: dict[str, Interactions] = {}
        domains = {}
        for name in (source, target):
            dom = view.data[name]
            rows = dom.interactions
            if settings.holdout > 0 and len(rows) >= 20:
                perm = torch.randperm(len(rows), generator=context.generator)
                n_hold = max(1, int(settings.holdout * len(rows)))
                held[name] = rows.select(perm[:n_hold])
                rows = rows.select(perm[n_hold:])
            domains[name] = dom.with_interactions(rows)
        devices = TrainView(view.data.replace_domains({**view.data.domains, **domains}),
                            view.scenario, view.source, view.target, view.implicit)
        return view, devices, held, overlap

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        from cdrec.federated.devices import DeviceStore

        cfg = self.config
        view, devices, held, overlap = self.device_view(train, context)
        self.rounds_ = []
        # The engine may draw from torch's global RNG before the fit runs (Ray, Flower); the
        # networks' initial weights are drawn from it, so every engine starts from this state.
        rng = torch.get_rng_state()

        def fit_on(transport: Any) -> None:
            torch.set_rng_state(rng)
            self._fit_rounds(view, held, overlap, validation, context, transport)

        if cfg.engine == "deployment" and (cfg.failure_rate > 0 or cfg.record_dir):
            raise ValueError("failure_rate and record_dir are ClientApp settings: a "
                             "deployment's SuperNodes run cdrec.federated.app's ClientApp, "
                             "which has neither; use them with engine flower")
        if cfg.secure_aggregation and cfg.engine == "vectorised":
            raise ValueError("secure_aggregation runs on Flower (engine flower or deployment): "
                             "the vectorised simulation has no messages to mask")
        secure = None
        if cfg.secure_aggregation:
            from cdrec.federated.secure import SecureSettings
            secure = SecureSettings(cfg.secure_shares, cfg.secure_threshold,
                                    timeout=cfg.round_timeout)
        self.fit_report_: dict[str, float] = {}
        if cfg.engine == "vectorised":
            from cdrec.federated.flower import VectorisedTransport
            fit_on(VectorisedTransport(DeviceStore.from_view(devices),
                                       failure_rate=cfg.failure_rate, failure_seed=context.seed))
        elif cfg.engine == "deployment":
            from cdrec.federated.flower import FlowerTransport, deployment_grid
            grid, n_nodes = deployment_grid()
            fit_on(FlowerTransport(grid, n_nodes, timeout=cfg.round_timeout, secure=secure,
                                   split=DeviceStore.from_view(devices).fingerprint))
        else:
            from cdrec.federated.flower import FlowerTransport, make_client_app, simulate
            store = DeviceStore.from_view(devices)
            with tempfile.TemporaryDirectory(prefix="cdrec-devices-") as tmp:
                path = str(store.save(Path(tmp) / "devices.pt"))
                app = make_client_app(path, failure_rate=cfg.failure_rate,
                                      failure_seed=context.seed, record_dir=cfg.record_dir)
                transports: list[Any] = []

                def serve(grid: Any) -> None:
                    transports.append(FlowerTransport(
                        grid, len(store), timeout=cfg.round_timeout, secure=secure,
                        split=store.fingerprint))
                    fit_on(transports[0])

                simulate(serve, app, len(store), workers=cfg.workers)
            self.fit_report_ = {**leakage(transports[0].attributed, store),
                                **leakage(transports[0].subspace, store, "subspace")}

    def _fit_rounds(self, view: TrainView, held: Mapping[str, Interactions], overlap: torch.Tensor,
                    validation: Evaluator | None, context: FitContext, transport: Any) -> None:
        cfg = self.config
        source, target = view.transfer_domains()
        settings = cfg.base_settings()
        bases = {}
        for name in (source, target):
            base = new_base(view, name, cfg.base, settings, context).to(context.device)
            base.reset_users(users_without_data(view, name))
            validate: Validate | None = None
            if name in held:
                dom = view.data[name]
                observed = observed_keys(dom.interactions.user, dom.interactions.item,
                                         dom.n_items)
                validate = holdout_validator(base, held[name], dom.n_items, observed, context)
            devices = transport.users_with(name)
            # Leakage is measured on the source pretrain's first rounds (plain uploads of V^c).
            step = FederatedRound(self._pretrain_stage(base), transport, name, self.rounds_,
                                  f"base_{name}",
                                  cfg.leakage_rounds if name == source else 0)
            train_loop(base, step, constant_epoch(devices), context=context,
                       stage=f"base_{name}", epochs=settings.epochs,
                       batch_size=cfg.devices_per_round, validate=validate,
                       patience=settings.patience)
            bases[name] = base
        self._set_bases(bases[source], bases[target], view, context)
        self._transport = transport
        try:
            self._fit_transfer(view, overlap, validation, context)
        finally:
            del self._transport

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        """The mapping stage (Algorithm 2) in rounds over the fit's transport: the training
        overlap users' devices with target ratings, early-stopped on the validation users."""
        transport = self._transport
        _, target = train.transfer_domains()
        self.transfer_ = self._new_transfer().to(context.device)
        devices = transport.users_with(target)
        devices = devices[torch.isin(devices, overlap.cpu())]
        step = FederatedRound(self._mapping_stage(), transport, target, self.rounds_, "mapping")
        train_loop(self, step, constant_epoch(devices), context=context, stage="mapping",
                   epochs=self.config.epochs, batch_size=self.config.devices_per_round,
                   validate=validator(self, validation), patience=self.config.patience)


class FedMetaEMConfig(MetaEMConfig, FederationConfig):
    """MetaEM's settings (the pretrain's in ``base_config``: its lr, weight decay, epochs =
    passes over the devices, patience) with the federation's."""


@register("FedMetaEM")
class FedMetaEM(FederatedTransfer, MetaEM):
    """MetaEM trained federated: Algorithm 1 per domain, then Algorithm 2 (task-oriented)."""

    Config = FedMetaEMConfig  # type: ignore[assignment]  # MetaEM's, with the federation's
    config: FedMetaEMConfig

    def _pretrain_stage(self, base: EmbeddingBase) -> Any:
        from cdrec.federated.protocol import FederatedStage

        assert isinstance(base, MetaEmbeddingBase)
        if self.config.objective != "task":
            raise ValueError("FedMetaEM trains the task-oriented mapping (Eq. 13-14) only")

        def per_user(users: torch.Tensor) -> dict[str, torch.Tensor]:
            state = base.user_state(users)
            return {"user": state, "private": base.private_items(state)}

        shared = metaem_shared(base)
        return FederatedStage(scorer="metaem", spec=base.config.model_dump(mode="json"),
                              per_user=per_user, shared=shared, trained_shared=list(shared),
                              parameters=trainable(base), lr=base.config.lr,
                              weight_decay=base.config.weight_decay, item_table="common")

    def _mapping_stage(self) -> Any:
        from cdrec.federated.protocol import FederatedStage

        target = self.target_
        assert isinstance(target, MetaEmbeddingBase)

        def per_user(users: torch.Tensor) -> dict[str, torch.Tensor]:
            state = self.transferred_state(users)             # Eq. 11
            return {"user": state, "private": target.private_items(state)}  # Eq. 13

        return FederatedStage(scorer="metaem", spec=target.config.model_dump(mode="json"),
                              per_user=per_user, shared=metaem_shared(target),
                              trained_shared=[], parameters=trainable(self.transfer_),
                              lr=self.config.lr, weight_decay=self.config.weight_decay)


def metaem_shared(base: MetaEmbeddingBase) -> dict[str, torch.Tensor]:
    """What every MetaEM device downloads whole: V^c and MLP_item's weights."""
    return {"common": base.item_factors.weight,
            **{f"item_mlp.{n}": p for n, p in base.item_mlp.named_parameters()}}


class FedMFConfig(TransferConfig, TrainingConfig, FederationConfig):
    """Federated MF: MF bases (dense Adam, L2 as weight decay) and EMCDR's MLP mapping trained
    on the target rating loss, all in federated rounds."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 256,
                                                   "lr": 0.001, "weight_decay": 1e-4,
                                                   "patience": 10}
    base: str = Field("MF", description="the MF base of both domains")
    hidden_factor: int = Field(2, ge=1, description="the mapping MLP's hidden width / input")


@register("FedMF")
class FedMF(FederatedTransfer):
    """The federated MF baseline: each device downloads the whole item matrix (n x k)."""

    Config = FedMFConfig
    config: FedMFConfig
    variant_defaults: ClassVar[dict[str, Any]] = {
        "base_config": {"sparse": False, "reg": 0.0, "weight_decay": 1e-4, "lr": 0.01}}

    def _new_transfer(self) -> nn.Module:
        return mapping_network("mlp", self.source_.user_dim, self.target_.user_dim,
                               self.config.hidden_factor)

    def _pretrain_stage(self, base: EmbeddingBase) -> Any:
        from cdrec.federated.protocol import FederatedStage

        assert isinstance(base, MFBase)
        shared = mf_shared(base)
        trained = ["items", "item_bias"] if base.use_bias else ["items"]

        def per_user(users: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"user": base.user_state(users)}

        return FederatedStage(scorer="mf", spec={"use_bias": base.use_bias},
                              per_user=per_user, shared=shared,
                              trained_shared=trained, parameters=trainable(base),
                              lr=base.config.lr, weight_decay=base.config.weight_decay,
                              item_table="items")

    def _mapping_stage(self) -> Any:
        from cdrec.federated.protocol import FederatedStage

        target = self.target_
        assert isinstance(target, MFBase)

        def per_user(users: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"user": self.transferred_state(users)}

        return FederatedStage(scorer="mf", spec={"use_bias": target.use_bias},
                              per_user=per_user,
                              shared=mf_shared(target), trained_shared=[],
                              parameters=trainable(self.transfer_), lr=self.config.lr,
                              weight_decay=self.config.weight_decay)


def mf_shared(base: MFBase) -> dict[str, torch.Tensor]:
    """What every federated MF device downloads whole: V, the item biases, the global mean."""
    return {"items": base.item_factors.weight, "item_bias": base.item_bias,
            "global_mean": base.global_mean}
