"""One federated round split between a server and devices (MetaEM's Algorithms 1 and 2), with no
transport. The Flower apps (``cdrec.federated.flower``) and the vectorised simulation
(:func:`vectorised_round`) both call these functions, so the maths exists once and the model
code stays free of any Flower import, as in Flower's own examples.

A round of a :class:`FederatedStage`:

1. The server computes, for each sampled device's user, the per-user tensors of the stage
   (MetaEM's pretrain: u_hat = MLP_user(u) and V^p_u = g(u_hat), Algorithm 1 lines 5-6; its
   mapping: u_hat^t = f(MLP^s_user(u^s)) and V^p = g^t(u_hat^t), Algorithm 2 and Eq. 13) and
   sends them with the shared tensors (V^c and MLP_item). That is the :func:`download` of one
   device: n k_p + k_p k_c + k numbers beside MLP_item, not n k.
2. A device computes, on its own ratings only, the summed squared error of Eq. 8 and its gradient
   with respect to what it downloaded (:func:`device_gradients`): V^c's as a dense n x k_p matrix,
   so that no item id travels. Its ratings and item ids stay on the device.
3. The server sums the uploads, divides by the round's row count (the gradient of the round's
   mean squared error), carries the per-user gradients back through its own modules by autograd
   (Algorithm 1 lines 11-12, Algorithm 2 lines 8-9) and takes one Adam step. Eq. 9's L2 term is
   Adam's weight decay, as in the centralised model.

MLP_item is the one module cdrec shares where the paper keeps a copy per device (see
``cdrec.models.coldstart.metaem``): its gradient is aggregated with the server's parameters. With
every device in a round, a round is exactly the centralised full-batch step
(``tests/test_federated_protocol.py``).

Which formula a device evaluates is named by a *scorer* (:data:`DEVICE_SCORERS`): ``metaem``
(Eq. 2, 6, 7 via :func:`cdrec.models.coldstart.metaem.meta_scores`) or ``mf`` (the biased inner
product of the federated MF baseline, :func:`cdrec.models.bases.mf.mf_scores`). The scorer's
settings travel as a small JSON ``spec`` (MLP_item's sizes), never data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from cdrec.models.bases.mf import mf_scores
from cdrec.models.coldstart.metaem import MetaEmbeddingConfig, item_tower, meta_scores

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DeviceData:
    """One device's ratings in one domain (item indices of that domain)."""

    items: torch.Tensor
    ratings: torch.Tensor


@dataclass(frozen=True)
class Upload:
    """What one device sends back: its row count, its summed squared error and the gradients of
    that sum with respect to the downloaded tensors it was asked for."""

    n_rows: int
    loss_sum: float
    grads: Tensors


@lru_cache(maxsize=8)
def _item_tower(spec: str) -> nn.Module:
    """MLP_item's architecture from its config (the weights come with each download). Built
    on the meta device: no memory, and no draw from torch's global RNG (initial weights that
    would be thrown away would otherwise shift every later draw of the process)."""
    with torch.device("meta"):
        return item_tower(MetaEmbeddingConfig(**json.loads(spec)))


def rows_of(table: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``table[items]`` through ``F.embedding``, whose backward sums repeated rows in a fixed
    order on the CPU (advanced indexing's accumulating backward does not with several threads:
    the same seed would then not give the same parameters)."""
    if table.dim() == 1:
        return nn.functional.embedding(items, table.unsqueeze(1)).squeeze(1)
    flat = nn.functional.embedding(items, table.flatten(1))
    return flat.unflatten(-1, table.shape[1:])


def _metaem_scores(download: Mapping[str, torch.Tensor], items: torch.Tensor, spec: str
                   ) -> torch.Tensor:
    tower = _item_tower(spec)
    weights = {k.removeprefix("item_mlp."): v for k, v in download.items()
               if k.startswith("item_mlp.")}

    def mlp(x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(tower, weights, (x,))

    return meta_scores(download["user"], download["private"], rows_of(download["common"], items),
                       mlp)


def _mf_scores(download: Mapping[str, torch.Tensor], items: torch.Tensor, spec: str
               ) -> torch.Tensor:
    return mf_scores(download["user"], rows_of(download["items"], items),
                     rows_of(download["item_bias"], items), download["global_mean"],
                     use_bias=bool(json.loads(spec)["use_bias"]))


# name -> fn(download, items, spec) -> predicted ratings of ``items``. The per-user tensors are
# one device's (``user`` [k]) or, in the vectorised simulation, one per row (``user`` [n, k]):
# the formulas broadcast over both.
DEVICE_SCORERS: dict[str, Callable[[Mapping[str, torch.Tensor], torch.Tensor, str],
                                   torch.Tensor]] = {"metaem": _metaem_scores, "mf": _mf_scores}


def device_gradients(download: Mapping[str, torch.Tensor], data: DeviceData, scorer: str,
                     spec: str, wanted: Sequence[str]) -> Upload:
    """A device's work in a round (Algorithm 1 line 7, Algorithm 2 line 5): the gradients of its
    summed squared error with respect to the downloaded tensors named in ``wanted``. The
    downloaded tensors themselves are not changed."""
    leaves = {k: v.detach().clone().requires_grad_(k in wanted) for k, v in download.items()}
    predicted = DEVICE_SCORERS[scorer](leaves, data.items, spec)
    loss = (predicted - data.ratings).pow(2).sum()
    grads = torch.autograd.grad(loss, [leaves[k] for k in wanted], allow_unused=True)
    return Upload(int(data.items.numel()), float(loss.detach()),
                  {k: torch.zeros_like(leaves[k]) if g is None else g
                   for k, g in zip(wanted, grads, strict=True)})


class FederatedStage:
    """The server's side of one federated stage.

    ``per_user(users)`` returns the stage's per-user tensors (a dict of ``[B, ...]`` tensors
    built by autograd from the server's parameters); ``shared`` the tensors every device
    downloads whole (parameters or constants); ``trained_shared`` those of ``shared`` whose
    gradients devices upload and the server applies. ``parameters`` are what the stage's Adam
    steps (with ``weight_decay``: Eq. 9's / Eq. 14's L2). ``item_table`` names the shared
    tensor whose rows are the items (V^c, V), whose gradient rows show what a device rated."""

    def __init__(self, *, scorer: str, spec: Mapping[str, Any],
                 per_user: Callable[[torch.Tensor], Tensors], shared: Mapping[str, torch.Tensor],
                 trained_shared: Sequence[str], parameters: Sequence[nn.Parameter], lr: float,
                 weight_decay: float, item_table: str | None = None) -> None:
        if scorer not in DEVICE_SCORERS:
            raise ValueError(f"unknown device scorer {scorer!r}; known: {sorted(DEVICE_SCORERS)}")
        unknown = set(trained_shared) - set(shared)
        if unknown:
            raise ValueError(f"trained_shared names {sorted(unknown)} are not shared tensors")
        self.scorer = scorer
        self.item_table = item_table  # the shared tensor whose rows are items (leakage)
        self.spec = json.dumps(dict(spec), sort_keys=True)
        self.per_user = per_user
        self.shared = dict(shared)
        self.trained_shared = list(trained_shared)
        self.optimizer = torch.optim.Adam(list(parameters), lr=lr, weight_decay=weight_decay)

    @torch.no_grad()
    def downloads(self, users: torch.Tensor) -> list[Tensors]:
        """What each device of ``users`` downloads this round (Algorithm 1 lines 5-6)."""
        per_user = self.per_user(users)
        shared = {k: v.detach() for k, v in self.shared.items()}
        return [{**{k: v[d] for k, v in per_user.items()}, **shared}
                for d in range(users.numel())]

    def wanted(self, download: Mapping[str, torch.Tensor]) -> list[str]:
        """The gradients a device uploads: its per-user tensors' and the trained shared ones'."""
        return [k for k in download if k not in self.shared or k in self.trained_shared]

    def step(self, users: torch.Tensor, uploads: Sequence[Upload]) -> float:
        """Algorithm 1 lines 11-12 (Algorithm 2 lines 8-9): the mean of the round's uploads, back
        through the server's modules, one Adam step. ``uploads[d]`` is from ``users[d]``; a
        device that failed is left out of both. Returns the round's mean squared error (nan, and
        no step, when no device answered)."""
        if len(uploads) != users.numel():
            raise ValueError(f"{len(uploads)} uploads for {users.numel()} devices")
        per_user_grads, shared_grads, loss, total = aggregate(self, uploads)
        if total == 0:
            return loss
        return self.apply(users, per_user_grads, shared_grads, loss)

    def apply(self, users: torch.Tensor, per_user_grads: Mapping[str, torch.Tensor],
              shared_grads: Mapping[str, torch.Tensor], loss: float) -> float:
        """The server's update from already-averaged gradients (what :meth:`step` and a secure
        aggregate both produce)."""
        self.optimizer.zero_grad(set_to_none=True)
        per_user = self.per_user(users)
        names = [k for k in per_user if k in per_user_grads]
        if names:
            torch.autograd.backward([per_user[k] for k in names],
                                    [per_user_grads[k] for k in names])
        for name, grad in shared_grads.items():
            param = self.shared[name]
            grad = torch.as_tensor(grad, dtype=param.dtype)
            param.grad = grad.clone() if param.grad is None else param.grad + grad
        self.optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def aggregate(stage: FederatedStage, uploads: Sequence[Upload], *, shared: bool = True
              ) -> tuple[Tensors, Tensors, float, int]:
    """The round's mean gradients from per-device uploads: per-user gradients stacked, shared
    ones summed, both divided by the round's row count (the gradient of the round's mean
    squared error). Returns them with that mean and the row count. ``shared=False``: the
    uploads hold the per-user gradients only (their shared ones are securely aggregated)."""
    total = sum(u.n_rows for u in uploads)
    if total == 0:
        return {}, {}, float("nan"), 0
    per_user = {k: torch.stack([u.grads[k] for u in uploads]) / total
                for k in uploads[0].grads if k not in stage.shared}
    means = {k: torch.stack([u.grads[k] for u in uploads]).sum(0) / total
             for k in (stage.trained_shared if shared else [])}
    return per_user, means, sum(u.loss_sum for u in uploads) / total, total


def vectorised_round(stage: FederatedStage, users: torch.Tensor,
                       devices: Sequence[DeviceData]) -> tuple[Tensors, Tensors, float, int]:
    """The same round as one batched computation (no transport): every sampled device's rows
    concatenated, one forward and one backward. Returns the round's averaged per-user gradients
    (``[B, ...]``), averaged shared gradients, mean squared error and row count, equal to
    :meth:`FederatedStage.step`'s aggregate of per-device uploads up to float rounding."""
    downloads = stage.downloads(users)
    counts = torch.tensor([d.items.numel() for d in devices])
    total = int(counts.sum())
    if total == 0:
        return {}, {}, float("nan"), 0
    wanted = stage.wanted(downloads[0])
    per_user_names = [k for k in downloads[0] if k not in stage.shared]
    leaves = {k: torch.stack([d[k] for d in downloads]).requires_grad_(k in wanted)
              for k in per_user_names}
    shared = {k: v.detach().clone().requires_grad_(k in wanted)
              for k, v in stage.shared.items()}
    owner = torch.repeat_interleave(torch.arange(len(devices)), counts)
    items = torch.cat([d.items for d in devices])
    ratings = torch.cat([d.ratings for d in devices])
    # Each row sees its own device's per-user tensors (gathered), the shared ones whole: the
    # scorer's formula broadcasts over rows exactly as on one device.
    rows = {**{k: rows_of(v, owner) for k, v in leaves.items()}, **shared}
    predicted = DEVICE_SCORERS[stage.scorer](rows, items, stage.spec)
    loss = (predicted - ratings).pow(2).sum()
    targets = [leaves[k] for k in per_user_names if k in wanted] + [
        shared[k] for k in stage.trained_shared]
    grads = torch.autograd.grad(loss, targets, allow_unused=True)
    out = [torch.zeros_like(t) if g is None else g / total for t, g in zip(targets, grads,
                                                                            strict=True)]
    n_user = len([k for k in per_user_names if k in wanted])
    per_user_grads = dict(zip([k for k in per_user_names if k in wanted], out[:n_user],
                              strict=True))
    shared_grads = dict(zip(stage.trained_shared, out[n_user:], strict=True))
    return per_user_grads, shared_grads, float(loss.detach()) / total, total
