"""Secure aggregation of a round's shared gradients with Flower's SecAgg+ (Bell et al., 2020).

Why: a device's plain upload of dL/dV^c is nonzero exactly on the rows of the items it rated, so
the server reads the device's item set off one upload. Under SecAgg+ the server learns only the
weighted mean over the round's devices. A round then has two exchanges:

1. ``train.grad`` (plain): the device computes every gradient, uploads the per-user ones (u_hat,
   V^p_u: about its own user, no item rows) with its row count, and keeps the shared ones
   (V^c, MLP_item), divided by its row count, in its node state.
2. SecAgg+ (``train``, the legacy strategy path, the only one Flower 1.42 offers): each device
   masks its kept gradients; the server unmasks only their mean weighted by the row counts,
   sum_d g_d / sum_d n_d, which is exactly the round's shared gradient.

Costs, measured in ``docs/metaem.md``: 4 more message exchanges per round, and quantisation
(values clipped to +-``clipping_range``, an error of a few 1e-7 with a tight ``max_weight``: set
per round to the largest row count). If too many devices drop during SecAgg+ it halts, and
with fewer than 3 devices it cannot start; the round is then skipped (no step) and its devices
counted as failed. A device that drops out during SecAgg+ is out of that round altogether.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from cdrec.federated import loopback_environment

loopback_environment()

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    RecordDict,
)
from flwr.serverapp import Grid

from cdrec.federated.wire import message_bytes

PENDING = "cdrec.pending"
PENDING_META = "cdrec.pending_meta"


@dataclass(frozen=True)
class SecureSettings:
    """SecAgg+'s parameters: each device shares its secrets with ``num_shares`` others (odd),
    of which ``reconstruction_threshold`` must answer to unmask it."""

    num_shares: int = 5
    reconstruction_threshold: int = 3

    def __post_init__(self) -> None:
        if self.num_shares < 3 or self.num_shares % 2 == 0:
            raise ValueError(f"SecAgg+ needs an odd num_shares >= 3, got {self.num_shares}")
        if not 2 <= self.reconstruction_threshold < self.num_shares:
            raise ValueError(f"SecAgg+ needs 2 <= reconstruction_threshold < num_shares "
                             f"({self.num_shares}), got {self.reconstruction_threshold}")
    clipping_range: float = 8.0
    timeout: float | None = None


def keep_pending(context: Context, round_id: str, n_rows: int,
                 grads: Mapping[str, torch.Tensor], clipping_range: float) -> int:
    """Device side, step 1: keep this round's shared gradients (per row) for the SecAgg+ step.
    Returns how many entries lie outside +-``clipping_range`` (SecAgg+ will clip them; the
    count is reported to the server with the row count, so clipping is never silent)."""
    per_row = {k: v / max(n_rows, 1) for k, v in sorted(grads.items())}
    context.state[PENDING] = ArrayRecord(torch_state_dict=per_row)
    context.state[PENDING_META] = ConfigRecord({"round": round_id, "n_rows": n_rows})
    return int(sum((v.abs() > clipping_range).sum() for v in per_row.values()))


def pending_fitres(msg: Message, context: Context) -> Message:
    """Device side, step 2: the kept gradients as the legacy FitRes that ``secaggplus_mod``
    masks (num_examples = the device's row count: SecAgg+'s weight)."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    if PENDING not in context.state:
        raise RuntimeError("a secure-aggregation step arrived with no kept gradients (the "
                           "device missed this round's train.grad message)")
    arrays = context.state[PENDING]
    meta = context.state[PENDING_META]
    assert isinstance(arrays, ArrayRecord) and isinstance(meta, ConfigRecord)
    asked = msg.content.config_records.get("fitins.config")
    if asked is not None and "round" in asked and asked["round"] != meta["round"]:
        raise RuntimeError(f"the secure-aggregation step of round {asked['round']!r} found the "
                           f"gradients of round {meta['round']!r}")
    params = [arrays[k].numpy() for k in sorted(arrays.keys())]
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(params),
                    int(meta["n_rows"]), {})  # type: ignore[arg-type]
    del context.state[PENDING]
    del context.state[PENDING_META]
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


@dataclass
class SecureOutcome:
    """What one SecAgg+ exchange gave the server: the weighted mean (empty when the protocol
    halted or could not start), the nodes whose vectors it holds, and the bytes of every
    SecAgg+ message per node (its four stages, both directions)."""

    mean: dict[str, torch.Tensor]
    survivors: list[int]
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)


class CountingGrid:
    """A Grid that counts the bytes of every message it sends and receives, per node."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.down: dict[int, int] = {}
        self.up: dict[int, int] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        for m in messages:
            node = m.metadata.dst_node_id
            self.down[node] = self.down.get(node, 0) + message_bytes(m)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for r in replies:
            node = r.metadata.src_node_id
            self.up[node] = self.up.get(node, 0) + message_bytes(r)
        return replies


def secure_mean(grid: Grid, weights: Mapping[int, int], names: list[str],
                settings: SecureSettings, round_id: str) -> SecureOutcome:
    """Server side, step 2: the SecAgg+ mean of the kept gradients of the nodes in ``weights``
    (node id -> row count), weighted by row count, as ``{name: tensor}`` (``names`` in the
    devices' sorted order). SecAgg+ needs at least 3 devices (an odd share count of 3 or more,
    a threshold below it): with fewer the round has no secure aggregate."""
    from flwr.common import FitIns, Parameters, parameters_to_ndarrays
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    n = len(weights)
    shares = min(settings.num_shares, n if n % 2 else n - 1)
    if shares < 3:
        return SecureOutcome({}, [])
    counting = CountingGrid(grid)
    run_id = grid.run.run_id
    result: list[tuple[list[int], list[np.ndarray]]] = []

    class Chosen(FedAvg):  # the round's devices; the aggregate captured as it comes out
        def configure_fit(self, server_round, parameters, client_manager):
            fitins = FitIns(Parameters([], ""), {"round": round_id})
            return [(GridClientProxy(nid, counting, run_id), fitins)  # type: ignore[arg-type]
                    for nid in weights]

        def aggregate_fit(self, server_round, results, failures):
            if results:
                result.append(([proxy.node_id for proxy, _ in results],
                               parameters_to_ndarrays(results[0][1].parameters)))
            return None, {}

    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={},
                                    state=RecordDict(), run_config={}),
                            strategy=Chosen())
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {Key.CURRENT_ROUND: zlib.crc32(round_id.encode())})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = SecAggPlusWorkflow(
        num_shares=shares,
        reconstruction_threshold=min(settings.reconstruction_threshold, shares - 1),
        max_weight=float(max(weights.values())), clipping_range=settings.clipping_range,
        timeout=settings.timeout)
    workflow(counting, context)  # type: ignore[arg-type]
    if not result:
        return SecureOutcome({}, [], counting.down, counting.up)
    survivors, arrays = result[0]
    mean = {name: torch.from_numpy(np.array(arr, dtype=np.float32))
            for name, arr in zip(names, arrays, strict=True)}
    return SecureOutcome(mean, survivors, counting.down, counting.up)
