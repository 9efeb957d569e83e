"""Sparse-gradient training: the cost of a step grows with the rows a batch touches, not with
the size of the tables. :func:`gather_rows` gives any table (1-D bias vectors included) a sparse
gradient, as ``nn.Embedding(sparse=True)`` does for 2-D ones, and :class:`LazyAdam` steps
those rows with Adam's formula."""

from __future__ import annotations

import math
from typing import Any

import torch


class _SparseGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.table_shape = table.shape
        return table[index]

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grad,) = grads
        (index,) = ctx.saved_tensors
        flat = index.reshape(-1)
        values = grad.reshape(flat.shape[0], *ctx.table_shape[1:])
        return torch.sparse_coo_tensor(flat.unsqueeze(0), values, ctx.table_shape,
                                       check_invariants=False), None


def gather_rows(table: torch.Tensor, index: torch.Tensor, *, sparse: bool) -> torch.Tensor:
    """``table[index]``; with ``sparse``, ``table`` receives a sparse COO gradient (rows of
    ``index`` only, repeated rows summed when the optimiser coalesces it)."""
    if (not (sparse and table.requires_grad and torch.is_grad_enabled())
            or torch._C._are_functorch_transforms_active()):
        # Frozen tables, and inside torch.func transforms (TMCDR's vmap over tasks), which take
        # gradients functionally: plain indexing.
        return table[index]
    out: torch.Tensor = _SparseGather.apply(table, index)
    return out


class LazyAdam(torch.optim.Optimizer):
    """Adam for parameters with sparse gradients, applied to the rows a gradient holds.

    Per step, for the rows ``r`` of the (coalesced) gradient ``g``::

        m[r] = b1 m[r] + (1 - b1) g[r]        v[r] = b2 v[r] + (1 - b2) g[r]^2
        p[r] -= lr * (m[r] / (1 - b1^t)) / (sqrt(v[r] / (1 - b2^t)) + eps)

    with ``t`` the number of steps taken, exactly dense Adam's formula (``torch.optim.Adam``;
    ``torch.optim.SparseAdam`` instead adds ``eps`` before the bias correction, which changes
    updates whenever gradients are small). Rows without gradient in a step keep their moments
    and values: the "lazy" difference from dense Adam, whose moments decay every step. When
    every row gets a gradient at every step the two are the same.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LazyAdam settings lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("LazyAdam takes sparse gradients; use Adam for dense ones")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                rows, values = _rows_and_sums(p.grad)
                m = state["exp_avg"].index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(
                    values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                step = m.div_(denom).mul_(group["lr"] / (1 - beta1 ** t))
                p.index_copy_(0, rows, p.index_select(0, rows).sub_(step))  # rows are distinct


def _rows_and_sums(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of a sparse gradient and each row's summed values, sorted by row: what
    ``coalesce`` gives, with one ``unique`` of the batch's indices (the cost of the batch, not
    of the table's rows)."""
    if grad.is_coalesced():
        return grad.indices()[0], grad.values()
    index, values = grad._indices()[0], grad._values()
    rows, position = torch.unique(index, return_inverse=True)
    sums = torch.zeros((rows.numel(), *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, position, values)
    return rows, sums

