"""MetaEM's pretrain round split between a server and devices (Algorithm 1), with no transport.

The Flower apps (ClientApp / ServerApp) will be thin adapters over these functions, which
hold the maths once: the model code stays free of any Flower import, as in Flower's own
examples.

- What a device downloads (:class:`Download`): the common item matrix V^c (n x k_p), its user's
  private matrix V^p_u = g(u_hat) (k_p x k_c), its user's u_hat = MLP_user(u) (k), and the
  current MLP_item. So it gets n k_p + k_p k_c + k numbers beside MLP_item, not n k.
- What a device computes (:func:`device_gradients`): on its own ratings only, the summed
  squared error of Eq. 8 and its gradient with respect to everything it downloaded.
- What a device uploads (:class:`Upload`): those gradients (V^c's as a dense n x k_p matrix,
  so that no item id travels) and its row count. Its ratings and item ids stay on the device.
- What the server does (:class:`MetaEMServer`): it sums the uploads and divides by the round's
  row count, giving the gradient of the round's mean squared error. It carries the u_hat and
  V^p_u gradients back through MLP_user, g and U by autograd (Algorithm 1, lines 11-12), and
  takes one Adam step. Eq. 9's L2 term is Adam's weight decay, as in the centralised model.

MLP_item is the one module cdrec shares where the paper keeps a copy per device (see
``cdrec.models.coldstart.metaem``). Its gradient is aggregated with the server's parameters.
With every device in a round, the round is exactly the centralised full-batch step
(``tests/test_federated_protocol.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cdrec.models.coldstart.metaem import MetaEmbeddingBase, meta_scores


@dataclass(frozen=True)
class Download:
    """What the server sends one device for one round."""

    common: torch.Tensor       # V^c, [n_items, k_p]
    private: torch.Tensor      # V^p_u, [k_p, k_c]
    user: torch.Tensor         # u_hat = MLP_user(u), [k]
    item_mlp: dict[str, torch.Tensor]

    def numel(self) -> int:
        """Numbers downloaded (what the O(k_c k_p + k_p n) claim counts, plus MLP_item)."""
        return (self.common.numel() + self.private.numel() + self.user.numel()
                + sum(t.numel() for t in self.item_mlp.values()))


@dataclass(frozen=True)
class Upload:
    """What one device sends back: gradients of the summed squared error on its rows."""

    n_rows: int
    loss_sum: float
    common: torch.Tensor       # dL/dV^c, dense [n_items, k_p]
    private: torch.Tensor      # dL/dV^p_u
    user: torch.Tensor         # dL/du_hat
    item_mlp: dict[str, torch.Tensor]


@dataclass(frozen=True)
class DeviceData:
    """One device's ratings in one domain (item indices of that domain)."""

    items: torch.Tensor
    ratings: torch.Tensor


def device_gradients(download: Download, data: DeviceData, item_mlp: torch.nn.Module
                     ) -> Upload:
    """A device's work in a round (Algorithm 1, line 7). ``item_mlp`` is the device's module,
    into which the downloaded weights are loaded; the downloaded tensors themselves are not
    changed."""
    mlp = copy.deepcopy(item_mlp)
    mlp.load_state_dict(download.item_mlp)
    common = download.common.detach().clone().requires_grad_(True)
    private = download.private.detach().clone().requires_grad_(True)
    user = download.user.detach().clone().requires_grad_(True)
    n = int(data.items.numel())
    predicted = meta_scores(user.expand(n, -1), private.expand(n, -1, -1), common[data.items],
                            mlp)
    loss = (predicted - data.ratings).pow(2).sum()
    names = [name for name, _ in mlp.named_parameters()]
    grads = torch.autograd.grad(loss, [common, private, user, *mlp.parameters()])
    return Upload(n, float(loss.detach()), grads[0], grads[1], grads[2],
                  dict(zip(names, grads[3:], strict=True)))


class MetaEMServer:
    """The server of one domain's pretrain stage, over a :class:`MetaEmbeddingBase`."""

    def __init__(self, base: MetaEmbeddingBase, lr: float | None = None,
                 weight_decay: float | None = None) -> None:
        self.base = base
        config = base.config
        self.optimizer = torch.optim.Adam(
            [p for p in base.parameters() if p.requires_grad],
            lr=config.lr if lr is None else lr,
            weight_decay=config.weight_decay if weight_decay is None else weight_decay)

    @torch.no_grad()
    def downloads(self, devices: torch.Tensor) -> list[Download]:
        """Algorithm 1, lines 5-6: u_hat and V^p_u of each sampled device's user, V^c and
        MLP_item, as each of ``devices`` (user indices) downloads them."""
        state = self.base.user_state(devices)
        private = self.base.private_items(state)
        common = self.base.item_factors.weight.detach()
        mlp = {k: v.detach() for k, v in self.base.item_mlp.state_dict().items()}
        return [Download(common, private[d], state[d], mlp) for d in range(devices.numel())]

    def step(self, devices: torch.Tensor, uploads: Sequence[Upload]) -> float:
        """Algorithm 1, lines 11-12: the mean of the round's uploads, back through the server's
        modules, one Adam step. ``uploads[d]`` is from ``devices[d]``; a device that failed is
        left out of both. Returns the round's mean squared error."""
        if len(uploads) != devices.numel():
            raise ValueError(f"{len(uploads)} uploads for {devices.numel()} devices")
        total = sum(u.n_rows for u in uploads)
        if total == 0:
            return float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        state = self.base.user_state(devices)
        private = self.base.private_items(state)
        torch.autograd.backward(
            [state, private],
            [torch.stack([u.user for u in uploads]) / total,
             torch.stack([u.private for u in uploads]) / total])
        extra = {"item_factors.weight": sum(u.common for u in uploads)}
        extra.update({f"item_mlp.{name}": sum(u.item_mlp[name] for u in uploads)
                      for name in uploads[0].item_mlp})
        parameters = dict(self.base.named_parameters())
        for name, grad in extra.items():
            param = parameters[name]
            summed = torch.as_tensor(grad) / total
            param.grad = summed if param.grad is None else param.grad + summed
        self.optimizer.step()
        return sum(u.loss_sum for u in uploads) / total
