"""Orthogonal maps between two latent spaces, kept orthogonal by Gram-Schmidt after each update.

Used by dual-transfer methods (DML, DDTCDR): a square ``X`` maps domain A's user embeddings to
domain B's (``X w_A ~ w_B``), and its transpose maps back, since ``X^T X = I``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def gram_schmidt(matrix: torch.Tensor) -> torch.Tensor:
    """The orthonormal matrix with the span of ``matrix``'s leading columns, column by column
    (modified Gram-Schmidt): column ``j`` minus its projections on the orthonormal columns
    before it, then scaled to unit length.

    For a full-rank square matrix this is the ``Q`` of its QR decomposition with a positive
    diagonal of ``R`` (``tests/test_dml.py`` checks it against ``torch.linalg.qr``); it is
    written out because the paper names Gram-Schmidt, and it costs ``k`` vector steps for a
    ``k x k`` map, each vectorised over the rows.
    """
    if matrix.dim() != 2:
        raise ValueError(f"gram_schmidt needs a matrix, got shape {tuple(matrix.shape)}")
    columns: list[torch.Tensor] = []
    for j in range(matrix.shape[1]):
        v = matrix[:, j]
        # Relative to the column: what is left of a dependent column is rounding error.
        floor = 100 * torch.finfo(matrix.dtype).eps * float(v.norm().clamp_min(1e-30))
        for q in columns:  # modified GS: project the running remainder, not the original column
            v = v - (q @ v) * q
        norm = v.norm()
        if float(norm) <= floor:
            raise ValueError(f"gram_schmidt: column {j} is linearly dependent on the ones "
                             "before it (the matrix is rank deficient)")
        columns.append(v / norm)
    return torch.stack(columns, dim=1)


class OrthogonalMap(nn.Module):
    """A ``k x k`` map ``X``, initialised to the identity, with ``forward(w) = w X^T`` (each row
    ``w`` mapped to ``X w``) and ``inverse(w) = w X`` (``X^T w``). Call :meth:`orthogonalise`
    after every optimiser step (DML, Algorithm 1 line 10)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"OrthogonalMap needs dim >= 1, got {dim}")
        self.weight = nn.Parameter(torch.eye(dim))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows @ self.weight.T

    def inverse(self, rows: torch.Tensor) -> torch.Tensor:
        return rows @ self.weight

    def dual_loss(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """DML Eq. 3 + Eq. 4 over paired rows: ``mean ||X w_s - w_t||^2 + ||w_s - X^T w_t||^2``
        (equal halves when ``X`` is exactly orthogonal; both are optimised, as the paper says)."""
        forward = (self(source) - target).pow(2).sum(dim=1).mean()
        dual = (source - self.inverse(target)).pow(2).sum(dim=1).mean()
        return forward + dual

    @torch.no_grad()
    def orthogonalise(self) -> None:
        self.weight.copy_(gram_schmidt(self.weight))

    def orthogonality_error(self) -> float:
        """``max |X^T X - I|``: 0 for an orthogonal map."""
        with torch.no_grad():
            eye = torch.eye(self.weight.shape[0], device=self.weight.device)
            return float((self.weight.T @ self.weight - eye).abs().max())


def chain(maps: Sequence[OrthogonalMap], start: int, end: int) -> torch.Tensor:
    """The map from domain ``start`` to domain ``end`` of a chain of domains 0, 1, ..., N-1
    linked by ``maps[j]`` (domain j -> j+1): ``X_{start,end} = X_{end-1,end} ... X_{start,start+1}``
    for ``start < end``, its transpose for ``start > end`` (DML Sec. 4.3). The paper writes
    ``X_jk = X_j(j+1) * ... * X_(k-1)k``; applied to column vectors the first map must act
    first, so the product is formed in application order (right to left)."""
    if not 0 <= start < len(maps) + 1 or not 0 <= end < len(maps) + 1:
        raise ValueError(f"domains {start} and {end} are not both in a chain of "
                         f"{len(maps) + 1} domains")
    dim = maps[0].weight.shape[0]
    lo, hi = sorted((start, end))
    product = torch.eye(dim, device=maps[0].weight.device)
    for j in range(lo, hi):
        product = maps[j].weight @ product
    return product if start <= end else product.T
