"""Data-parallel training over several processes with ``torch.distributed`` (gloo on CPUs,
nccl on GPUs), launched by ``torchrun`` (or ``cdrec run --nproc N``, which calls it).

Every process runs the whole experiment on a full copy of the data and the model. Inside a
training stage, each global minibatch (the same rows, in the same order, as in one process:
every process draws the same seeded shuffles and negatives) is cut into one contiguous shard
per process; each process computes its shard's loss and gradients, and the gradients are summed
across processes weighted by shard size, so every process applies the gradient of the whole
batch's loss and the models stay identical. Validation, closed-form stages and evaluation run
replicated; the decisions taken from them (early stopping, when a checkpoint is due) are process
0's, broadcast (:func:`agree`), and each stage ends with process 0's state copied to all
(:func:`broadcast_state`), so float differences between processes cannot make them diverge.

Why not ``DistributedDataParallel``: its reducer needs the loss computed inside the wrapped
module's ``forward`` and knows sparse gradients only from ``nn.Embedding(sparse=True)``
modules; cdrec's steps compute losses from base methods (``loss_with`` on user states, TMCDR's
meta loss) and its bias vectors get sparse gradients too. The all-reduce below is what DDP does
(one flattened buffer per step for dense gradients), plus an all-gather of sparse rows.

Only process 0 writes the run directory and prints; process ``r > 0`` keeps its own checkpoints
under ``<output_dir>/.ranks/rank<r>/`` so ``--resume`` works without a shared file system.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes of the job (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's index (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes results and prints (process 0)."""
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR``, ...); gloo on the CPU, nccl for CUDA devices. Returns whether the
    job is distributed. A single process (no ``WORLD_SIZE`` or 1) is left alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def agree(value: float) -> float:
    """Process 0's ``value`` in every process (itself alone): decisions a process would take
    from its own clock or its own float round-off (early stopping on a validation score, when a
    checkpoint is due) are taken once, so no process runs a collective the others skip."""
    if world_size() == 1:
        return value
    buffer = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(buffer, src=0)
    return float(buffer.item())


def check_same(value: int, what: str) -> None:
    """Raise in every process when the processes disagree on ``value`` (e.g. the epoch a resumed
    stage starts from), naming ``what`` and each process's value."""
    if world_size() == 1:
        return
    mine = torch.tensor([int(value)], dtype=torch.long)
    values = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(values, mine)
    seen = [int(v) for v in values]
    if len(set(seen)) > 1:
        raise RuntimeError(
            f"the processes disagree on {what}: {seen} (process 0, 1, ...); their checkpoints "
            "differ (an interrupted write, or another process count): rerun without --resume")


def broadcast_state(module: torch.nn.Module) -> None:
    """Copy process 0's parameters and buffers into every process: at the end of each stage,
    so that float differences between processes (CUDA's atomics, another CPU's maths library)
    cannot accumulate from one stage to the next."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict(keep_vars=True).values():
            if not isinstance(tensor, torch.Tensor) or not tensor.numel():
                continue
            if tensor.dtype == torch.bool:  # gloo broadcasts numbers, not booleans
                buffer = tensor.data.to(torch.uint8)
                dist.broadcast(buffer, src=0)
                tensor.data.copy_(buffer.bool())
            else:
                dist.broadcast(tensor.data, src=0)


def shutdown() -> None:
    """Leave the process group (after a barrier, so no process tears down gloo while another
    still talks to it: exiting without this can abort the process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(index: torch.Tensor) -> torch.Tensor:
    """This process's contiguous part of a global batch's row ``index`` (all of it alone)."""
    size = world_size()
    if size == 1:
        return index
    return index.tensor_split(size)[rank()]


def all_reduce_gradients(dense: Sequence[torch.Tensor], sparse: Sequence[torch.Tensor],
                         share: float, losses: torch.Tensor) -> torch.Tensor:
    """Turn each process's shard gradients into the whole batch's, in place, and return the
    whole batch's ``losses``.

    ``share`` is this shard's fraction of the batch's rows. A loss that is a mean over its
    shard's rows plus terms of the parameters alone (a penalty) has, summed over processes with
    weights ``share``, exactly the gradient of the whole batch's loss. Dense gradients travel
    in one flattened buffer with the weighted losses; a missing gradient (a parameter this
    shard did not reach) counts as zero. Sparse gradients (embedding rows) are gathered: every
    process receives all shards' rows and values (LazyAdam sums duplicate rows).
    """
    # One dtype for the buffer in every process (an empty shard's zero loss included).
    dtype = dense[0].dtype if dense else torch.float32
    present = torch.tensor([float(p.grad is not None) for p in dense], dtype=dtype,
                           device=losses.device)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in dense]
    flat = torch.cat([g.reshape(-1) * share for g in grads]
                     + [losses.reshape(-1).to(dtype) * share, present])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(dense, grads, strict=True):
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    total_losses = flat[offset:offset + losses.numel()].view_as(losses).to(losses.dtype)
    reached = flat[offset + losses.numel():]
    for p, g, hit in zip(dense, grads, reached.tolist(), strict=True):
        # A parameter no shard reached keeps no gradient, so the optimiser skips it as it
        # would in one process.
        p.grad = g if hit > 0 else None
    for p in sparse:
        p.grad = _gather_sparse(p, share)
    return total_losses


def _gather_sparse(param: torch.Tensor, share: float) -> torch.Tensor | None:
    """All processes' sparse row gradients of ``param``, weighted by their shares, as one
    (uncoalesced) sparse tensor; ``None`` when no process's shard reached a row, so the
    optimiser skips the table as it would in one process."""
    size = world_size()
    grad = param.grad
    if grad is None:
        rows = torch.zeros(0, dtype=torch.long, device=param.device)
        values = torch.zeros((0, *param.shape[1:]), dtype=param.dtype, device=param.device)
    else:
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values() * share
    count = torch.tensor([rows.numel()], device=param.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    longest = int(max(int(c) for c in counts))
    if longest == 0:
        return None
    pad = longest - rows.numel()
    rows = torch.cat([rows, rows.new_zeros(pad)])
    values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
    all_rows = [torch.empty_like(rows) for _ in range(size)]
    all_values = [torch.empty_like(values) for _ in range(size)]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_values, values)
    kept_rows = torch.cat([r[:int(c)] for r, c in zip(all_rows, counts, strict=True)])
    kept_values = torch.cat([v[:int(c)] for v, c in zip(all_values, counts, strict=True)])
    return torch.sparse_coo_tensor(kept_rows.unsqueeze(0), kept_values, param.shape)


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run ``python -m cdrec <argv>`` as ``nproc`` processes on this machine through
    ``torch.distributed.run`` (torchrun), rendezvous and gloo traffic on 127.0.0.1 only."""
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo binds loopback, not the host name
    torchrun(["--nnodes=1", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
              "--rdzv-endpoint=127.0.0.1:0", "--max-restarts=0", "-m", "cdrec", *argv])
