"""MetaEM's federated rounds on Flower (flwr 1.42, Message API): the ClientApp of a device, the
server's transport over a ``Grid``, and the simulation engine.

Flower carries messages; the maths is ``cdrec.federated.protocol``'s. A run is:

1. ``query`` to every node: each answers with its user index and, per domain, whether it holds
   ratings there (not how many, nor which items). The server keeps node id <-> user.
2. Per round, ``train.grad`` to each sampled device's node: an ArrayRecord ``download`` (the
   stage's per-user tensors and the shared V^c / MLP_item) and a ConfigRecord ``task`` (domain,
   scorer, scorer spec, the gradients wanted). The reply: an ArrayRecord ``upload`` with those
   gradients and a MetricRecord ``stats`` (row count, summed squared error).
3. A device that fails or times out is left out of that round's mean (:class:`RoundResult`
   counts them). Bytes are measured on the messages themselves: the deflated size of every
   object Flower serialises for a message (:func:`message_bytes`).

The same ClientApp runs in the simulation engine (:func:`simulate`, Ray actors on this machine)
and in a deployment (``flower-supernode`` processes, ``cdrec.federated.app``). Mods:
:class:`RecordingMod` writes every message a device sends (the privacy test reads them) and
:class:`FailureMod` makes a seeded fraction of devices fail a round.

Traffic stays on this machine: ``cdrec.federated`` sets ``FLWR_TELEMETRY_ENABLED=0``,
``FLWR_DISABLE_UPDATE_CHECK=1`` and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray binds
127.0.0.1 only; it reads the variable at import) before flwr or ray is imported.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from cdrec.federated import loopback_environment
from cdrec.federated.devices import DeviceStore
from cdrec.federated.protocol import (
    FederatedStage,
    Tensors,
    Upload,
    aggregate,
    device_gradients,
    vectorised_round,
)
from cdrec.federated.secure import SecureSettings
from cdrec.federated.wire import message_bytes

loopback_environment()

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

GRAD = "train.grad"       # a round's message type; plain "train" is left to secaggplus_mod
QUERY = "query"
INJECTED_FAILURE = 1001   # the Error code of FailureMod's replies


def injected_failure(seed: int, round_id: str, partition: int, rate: float) -> bool:
    """Whether device ``partition`` fails round ``round_id`` under :class:`FailureMod`: a seeded
    draw, so the vectorised simulation fails the same devices."""
    return rate > 0 and random.Random(f"{seed}:{round_id}:{partition}").random() < rate


# ---------------------------------------------------------------------------------------------
# Device side


@lru_cache(maxsize=4)
def _store(path: str) -> DeviceStore:
    """A process's device data file, read once (Ray reuses its actor processes)."""
    return DeviceStore.load(path)


def _partition(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise KeyError("this node has no partition-id in its node config (flower-supernode "
                       "--node-config 'partition-id=P data-path=FILE')") from None


def _data_path(context: Context, default: str | None) -> str:
    path = context.node_config.get("data-path", default)
    if path is None:
        raise KeyError("this node has no data-path in its node config, and the ClientApp was "
                       "built without a device data file")
    return str(path)


@dataclass
class RecordingMod:
    """Writes every message the device sends (its replies) to ``directory`` as plain tensors
    and values: what a test reads to check what leaves a device."""

    directory: str

    def __call__(self, msg: Message, context: Context,
                 call_next: Callable[[Message, Context], Message]) -> Message:
        reply = call_next(msg, context)
        record: dict[str, Any] = {"message_type": msg.metadata.message_type,
                                  "partition": _partition(context), "error": reply.has_error()}
        if not reply.has_error():
            content = reply.content
            record["arrays"] = {f"{name}/{key}": torch.from_numpy(arr.numpy().copy())
                                for name, rec in content.array_records.items()
                                for key, arr in rec.items()}
            values: dict[str, Any] = {}
            for name, config in content.config_records.items():
                values.update({f"{name}/{key}": value for key, value in config.items()})
            for name, metrics in content.metric_records.items():
                values.update({f"{name}/{key}": value for key, value in metrics.items()})
            record["values"] = values
        out = Path(self.directory)
        out.mkdir(parents=True, exist_ok=True)
        stamp = f"{_partition(context)}_{msg.metadata.group_id}_{time.time_ns()}"
        torch.save(record, out / f"{stamp}.pt")
        return reply


@dataclass
class FailureMod:
    """Makes a seeded ``rate`` of the devices of each round fail (an Error reply, as a crashed
    ClientApp gives): the fault injection of issue 17's 30 % test."""

    rate: float
    seed: int = 0

    def __call__(self, msg: Message, context: Context,
                 call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type == GRAD and injected_failure(
                self.seed, msg.metadata.group_id, _partition(context), self.rate):
            return Message(Error(INJECTED_FAILURE, "injected failure"), reply_to=msg)
        return call_next(msg, context)


def make_client_app(devices_file: str | None = None, *, failure_rate: float = 0.0,
                    failure_seed: int = 0, record_dir: str | None = None) -> ClientApp:
    """A device's ClientApp. Its data is partition ``partition-id`` of the device data file
    (``data-path`` in the node config, else ``devices_file``). It answers plain rounds and, when
    the server asks for it, secure ones (``cdrec.federated.secure``)."""
    from flwr.client.mod import secaggplus_mod

    from cdrec.federated.secure import keep_pending, pending_fitres

    mods: list[Any] = []
    if record_dir is not None:
        mods.append(RecordingMod(record_dir))      # outermost: sees every reply
    if failure_rate > 0:
        mods.append(FailureMod(failure_rate, failure_seed))
    mods.append(secaggplus_mod)                    # handles "train" (SecAgg+) messages only
    app = ClientApp(mods=mods)

    @app.train()
    def secure_step(msg: Message, context: Context) -> Message:
        return pending_fitres(msg, context)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        store = _store(_data_path(context, devices_file))
        p = _partition(context)
        has = {f"has.{d}": bool(store.device(p, d).items.numel() > 0) for d in store.domains}
        return Message(RecordDict({"device": ConfigRecord(
            {"user": int(store.users[p]), "split": store.fingerprint, **has})}),
            reply_to=msg)

    @app.train("grad")
    def grad(msg: Message, context: Context) -> Message:
        store = _store(_data_path(context, devices_file))
        task = msg.content.config_records["task"]
        download = msg.content.array_records["download"].to_torch_state_dict()
        data = store.device(_partition(context), str(task["domain"]))
        upload = device_gradients(download, data, str(task["scorer"]), str(task["spec"]),
                                  [str(w) for w in task["wanted"]])  # type: ignore[union-attr]
        grads = upload.grads
        stats: dict[str, int | float | list[int] | list[float]] = {"n_rows": upload.n_rows, "loss_sum": upload.loss_sum}
        if task.get("secure", False):   # the shared gradients wait for the SecAgg+ step
            shared = str(task["shared"]).split(",")
            stats["clipped"] = keep_pending(context, msg.metadata.group_id, upload.n_rows,
                                            {k: grads[k] for k in shared},
                                            float(task["clip"]))  # type: ignore[arg-type]
            grads = {k: v for k, v in grads.items() if k not in shared}
        content = RecordDict({"upload": ArrayRecord(torch_state_dict=grads),
                              "stats": MetricRecord(stats)})
        return Message(content, reply_to=msg)

    return app


# ---------------------------------------------------------------------------------------------
# Server side


@dataclass
class RoundResult:
    """One round's aggregate and what it cost."""

    users: torch.Tensor                # the devices that answered, in the order of the grads
    per_user_grads: Tensors
    shared_grads: Tensors
    loss: float
    n_rows: int
    sampled: int
    failed: int
    bytes_down: list[int] = field(default_factory=list)   # per answered device (Flower only)
    bytes_up: list[int] = field(default_factory=list)
    seconds: float = 0.0
    clipped: int = 0                   # SecAgg+: gradient entries clipped to +-clipping_range


class FlowerTransport:
    """Rounds over a Flower ``Grid`` (simulation or deployment alike).

    ``split``: the fingerprint of the device data the server expects (``DeviceStore``); a
    device holding another split's data is refused at the join. ``leakage`` rounds record what
    the server can read off them (:meth:`round`)."""

    def __init__(self, grid: Grid, n_nodes: int, *, timeout: float | None = None,
                 join_timeout: float = 600.0, secure: SecureSettings | None = None,
                 split: str | None = None) -> None:
        self.grid = grid
        self.timeout = timeout
        self.secure = secure
        # (domain, user, items): per device of a leakage round, the items the server can
        # attribute to it; ``subspace``: the same from the per-user gradient dL/dV^p_u alone.
        self.attributed: list[tuple[str, int, torch.Tensor]] = []
        self.subspace: list[tuple[str, int, torch.Tensor]] = []
        self.node_of: dict[int, int] = {}
        self.has: dict[str, set[int]] = {}
        deadline = time.monotonic() + join_timeout
        nodes = list(grid.get_node_ids())
        while len(nodes) < n_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {n_nodes} devices joined in "
                                   f"{join_timeout:.0f} s")
            time.sleep(0.2)
            nodes = list(grid.get_node_ids())
        queries = [Message(RecordDict({"task": ConfigRecord({"ask": "device"})}),
                           dst_node_id=n, message_type=QUERY, group_id="join") for n in nodes]
        replies = list(grid.send_and_receive(queries, timeout=join_timeout))
        for reply in replies:
            if reply.has_error():
                raise RuntimeError(f"device on node {reply.metadata.src_node_id} failed to "
                                   f"answer the join query: {reply.error.reason}")
            device = reply.content.config_records["device"]
            if split is not None and device.get("split") != split:
                raise ValueError(f"device on node {reply.metadata.src_node_id} holds the data "
                                 f"of split {device.get('split')!r}, the server expects "
                                 f"{split!r}: write the devices' file with the server's config, "
                                 "overrides and seed (cdrec federated-devices)")
            user = int(device["user"])  # type: ignore[arg-type]
            self.node_of[user] = reply.metadata.src_node_id
            for key, value in device.items():
                if key.startswith("has.") and value:
                    self.has.setdefault(key.removeprefix("has."), set()).add(user)
        if len(self.node_of) != len(nodes):
            raise RuntimeError(f"{len(nodes) - len(self.node_of)} of {len(nodes)} devices did "
                               f"not answer the join query in {join_timeout:.0f} s")

    def users_with(self, domain: str) -> torch.Tensor:
        return torch.tensor(sorted(self.has.get(domain, set())), dtype=torch.long)

    def round(self, stage: FederatedStage, domain: str, users: torch.Tensor, round_id: str,
              leakage: bool = False) -> RoundResult:
        """One round over the devices of ``users``. Its seconds leave out the byte counting
        (each message serialised once more)."""
        t0 = time.perf_counter()
        counting = 0.0
        downloads = stage.downloads(users)
        wanted = stage.wanted(downloads[0])
        secure = self.secure is not None and bool(stage.trained_shared)
        task = {"domain": domain, "scorer": stage.scorer, "spec": stage.spec, "wanted": wanted,
                "secure": secure, "shared": ",".join(stage.trained_shared),
                "clip": self.secure.clipping_range if self.secure else 0.0}
        messages, down = {}, {}
        for user, download in zip(users.tolist(), downloads, strict=True):
            msg = Message(RecordDict({"download": ArrayRecord(torch_state_dict=download),
                                      "task": ConfigRecord(task)}),  # type: ignore[arg-type]
                          dst_node_id=self.node_of[user], message_type=GRAD, group_id=round_id)
            messages[self.node_of[user]] = (user, msg)
            c0 = time.perf_counter()
            down[user] = message_bytes(msg)
            counting += time.perf_counter() - c0
        replies = self.grid.send_and_receive([m for _, m in messages.values()],
                                             timeout=self.timeout)
        answered: dict[int, Upload] = {}
        up: dict[int, int] = {}
        clipped = 0
        for reply in replies:
            if reply.has_error():
                continue
            user = messages[reply.metadata.src_node_id][0]
            stats = reply.content.metric_records["stats"]
            grads = reply.content.array_records["upload"].to_torch_state_dict()
            answered[user] = Upload(int(stats["n_rows"]),  # type: ignore[arg-type]
                                    float(stats["loss_sum"]), grads)  # type: ignore[arg-type]
            clipped += int(stats.get("clipped", 0))  # type: ignore[arg-type]
            c0 = time.perf_counter()
            up[user] = message_bytes(reply)
            counting += time.perf_counter() - c0
        order = [u for u in users.tolist() if u in answered]
        shared: Tensors = {}
        if secure and order:
            from cdrec.federated.secure import secure_mean
            assert self.secure is not None
            outcome = secure_mean(self.grid, {self.node_of[u]: answered[u].n_rows
                                              for u in order},
                                  sorted(stage.trained_shared), self.secure, round_id)
            # Devices that dropped out during SecAgg+ are out of this round altogether.
            survivors = set(outcome.survivors)
            order = [u for u in order if self.node_of[u] in survivors]
            shared = outcome.mean
            for u in order:
                down[u] += outcome.bytes_down.get(self.node_of[u], 0)
                up[u] += outcome.bytes_up.get(self.node_of[u], 0)
        per_user, plain_shared, loss, n_rows = aggregate(stage, [answered[u] for u in order],
                                                         shared=not secure)
        if not secure:
            shared = plain_shared
        if not order:
            per_user, shared, loss, n_rows = {}, {}, float("nan"), 0
        if leakage and stage.item_table and n_rows:
            self._record_leakage(stage, domain, order, answered, shared, secure)
        return RoundResult(torch.tensor(order, dtype=torch.long), per_user, shared, loss,
                           n_rows, users.numel(), users.numel() - len(order),
                           [down[u] for u in order], [up[u] for u in order],
                           time.perf_counter() - t0 - counting, clipped)

    def _record_leakage(self, stage: FederatedStage, domain: str, order: Sequence[int],
                        answered: dict[int, Upload], shared: Tensors, secure: bool) -> None:
        """What the server can read off this round, per device: the nonzero item rows of its
        item-table gradient (under SecAgg+ the aggregate's, the same for every device), and
        the items whose V^c row lies in the column space of its plain dL/dV^p_u (that matrix
        is sum_j V^c[j]^T h_j over the device's rated items j: when they are fewer than k_p,
        their rows span a subspace that the server sees)."""
        table = str(stage.item_table)
        items = stage.shared[table].detach()
        for u in order:
            seen = shared[table] if secure else answered[u].grads[table]
            self.attributed.append((domain, u, seen.abs().sum(1).nonzero().squeeze(1)))
            private = answered[u].grads.get("private")
            if private is not None:
                self.subspace.append((domain, u, subspace_items(private, items)))


def subspace_items(private_grad: torch.Tensor, common: torch.Tensor,
                   tolerance: float = 1e-3) -> torch.Tensor:
    """Items whose row of ``common`` (V^c, [n, k_p]) lies, up to ``tolerance`` (relative), in
    the column space of ``private_grad`` (dL/dV^p_u, [k_p, k_c]): the server's guess of a
    device's items from its per-user gradient. Full rank: every item (no information)."""
    u, sv, _ = torch.linalg.svd(private_grad.double(), full_matrices=False)
    rank = int((sv > sv[0] * 1e-6).sum()) if sv.numel() and sv[0] > 0 else 0
    if rank == 0:
        return torch.zeros(0, dtype=torch.long)
    basis = u[:, :rank]
    rows = common.double()
    residual = (rows - rows @ basis @ basis.T).norm(dim=1)
    return (residual <= tolerance * rows.norm(dim=1).clamp_min(1e-12)).nonzero().squeeze(1)


class VectorisedTransport:
    """The same rounds with no transport: every sampled device's local step as one batched
    computation (:func:`vectorised_round`), failing the devices :class:`FailureMod` would."""

    def __init__(self, store: DeviceStore, *, failure_rate: float = 0.0,
                 failure_seed: int = 0) -> None:
        self.store = store
        self.partition = store.partition_of()
        self.failure_rate = failure_rate
        self.failure_seed = failure_seed

    def users_with(self, domain: str) -> torch.Tensor:
        counts = self.store.indptr[domain].diff()
        return torch.sort(self.store.users[counts > 0]).values

    def round(self, stage: FederatedStage, domain: str, users: torch.Tensor, round_id: str,
              leakage: bool = False) -> RoundResult:
        t0 = time.perf_counter()
        keep = [u for u in users.tolist() if not injected_failure(
            self.failure_seed, round_id, self.partition[u], self.failure_rate)]
        answered = torch.tensor(keep, dtype=torch.long)
        devices = [self.store.device(self.partition[u], domain) for u in keep]
        if not keep:
            return RoundResult(answered, {}, {}, float("nan"), 0, users.numel(), users.numel())
        per_user, shared, loss, n_rows = vectorised_round(stage, answered, devices)
        return RoundResult(answered, per_user, shared, loss, n_rows, users.numel(),
                           users.numel() - len(keep), seconds=time.perf_counter() - t0)


def simulate(server_main: Callable[[Grid], None], client_app: ClientApp, n_nodes: int, *,
             workers: int = 2) -> None:
    """Run ``server_main(grid)`` as the ServerApp of a Flower simulation of ``n_nodes``
    devices on this machine (Ray, ``workers`` actors of one CPU each). ``server_main`` runs in a
    thread of this process, so it can train model objects in place; an exception in it is
    raised here."""
    from flwr.simulation import run_simulation

    server_app = ServerApp()
    failure: list[BaseException] = []

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            server_main(grid)
        except BaseException as exc:  # re-raised below: Flower only logs a ServerApp's error
            failure.append(exc)
            raise

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_nodes,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": workers,
                                                 "_node_ip_address": "127.0.0.1",
                                                 "include_dashboard": False}})
    if failure:
        raise failure[0]


_DEPLOYMENT: list[tuple[Grid, int]] = []


@contextlib.contextmanager
def serving(grid: Grid, n_nodes: int) -> Iterator[None]:
    """Inside a deployment's ServerApp: models with ``engine: deployment`` fit over ``grid``
    (``n_nodes`` devices are expected to join)."""
    _DEPLOYMENT.append((grid, n_nodes))
    try:
        yield
    finally:
        _DEPLOYMENT.pop()


def deployment_grid() -> tuple[Grid, int]:
    """The grid of the running deployment (see :func:`serving`)."""
    if not _DEPLOYMENT:
        raise RuntimeError("engine 'deployment' runs inside cdrec.federated.app's ServerApp "
                           "(`flwr run`, see the README); use engine 'flower' for a simulation "
                           "on this machine")
    return _DEPLOYMENT[-1]
