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
per round to the largest row count). If too many devices drop during SecAgg+ it halts; the
round is then skipped (no step) and counted as failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

PENDING = "cdrec.pending"
PENDING_META = "cdrec.pending_meta"


@dataclass(frozen=True)
class SecureSettings:
    """SecAgg+'s parameters: each device shares its secrets with ``num_shares`` others (odd),
    of which ``reconstruction_threshold`` must answer to unmask it."""

    num_shares: int = 5
    reconstruction_threshold: int = 3
    clipping_range: float = 8.0
    timeout: float | None = None


def keep_pending(context: Context, round_id: str, n_rows: int,
                 grads: Mapping[str, torch.Tensor]) -> None:
    """Device side, step 1: keep this round's shared gradients (per row) for the SecAgg+ step."""
    per_row = {k: v / max(n_rows, 1) for k, v in sorted(grads.items())}
    context.state[PENDING] = ArrayRecord(torch_state_dict=per_row)
    context.state[PENDING_META] = ConfigRecord({"round": round_id, "n_rows": n_rows})


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
    params = [arrays[k].numpy() for k in sorted(arrays.keys())]
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(params),
                    int(meta["n_rows"]), {})  # type: ignore[arg-type]
    del context.state[PENDING]
    del context.state[PENDING_META]
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def secure_mean(grid: Grid, weights: Mapping[int, int], names: list[str],
                settings: SecureSettings, round_id: int) -> dict[str, torch.Tensor] | None:
    """Server side, step 2: the SecAgg+ mean of the kept gradients of the nodes in ``weights``
    (node id -> row count), weighted by row count, as ``{name: tensor}`` (``names`` in the
    devices' sorted order); None when the protocol halted."""
    from flwr.common import FitIns, Parameters
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    run_id = grid.run.run_id
    result: list[list[np.ndarray]] = []

    class Chosen(FedAvg):  # the round's devices, and the aggregate captured as it comes out
        def configure_fit(self, server_round, parameters, client_manager):
            fitins = FitIns(Parameters([], ""), {"round": round_id})
            return [(GridClientProxy(nid, grid, run_id), fitins) for nid in weights]

        def aggregate_fit(self, server_round, results, failures):
            from flwr.common import parameters_to_ndarrays
            if results:
                result.append(parameters_to_ndarrays(results[0][1].parameters))
            return None, {}

    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={},
                                    state=RecordDict(), run_config={}),
                            strategy=Chosen())
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {Key.CURRENT_ROUND: round_id})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    n = len(weights)
    shares = min(settings.num_shares, n if n % 2 else n - 1)
    workflow = SecAggPlusWorkflow(
        num_shares=max(shares, 1),
        reconstruction_threshold=min(settings.reconstruction_threshold, max(shares, 1)),
        max_weight=float(max(weights.values())), clipping_range=settings.clipping_range,
        timeout=settings.timeout)
    workflow(grid, context)
    if not result:
        return None
    return {name: torch.from_numpy(np.array(arr, dtype=np.float32))
            for name, arr in zip(names, result[0], strict=True)}
