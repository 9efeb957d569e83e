"""Autoencoders that turn an entity's (sparse) feature vector into a short embedding.

DML (Li and Tuzhilin, Sec. 3.1, Eq. 2) and DDTCDR encode every user and item of a domain with an
MLP autoencoder trained on reconstruction, and use the encoder's output as its embedding,
constrained to the unit ball. :class:`SparseRows` holds the feature vectors once, in CSR form,
and densifies only a batch of rows, so a user x item interaction matrix is never dense in memory.
"""

from __future__ import annotations

import torch
from torch import nn

from cdrec.nn.layers import MLP


class SparseRows:
    """An ``[n_rows, n_columns]`` matrix stored as CSR tensors; :meth:`dense` gathers rows."""

    def __init__(self, row: torch.Tensor, column: torch.Tensor, value: torch.Tensor,
                 shape: tuple[int, int]) -> None:
        n_rows, n_columns = shape
        if row.numel() and (int(row.max()) >= n_rows or int(column.max()) >= n_columns
                            or int(row.min()) < 0 or int(column.min()) < 0):
            raise ValueError(f"SparseRows: an entry lies outside the shape {shape}")
        order = torch.argsort(row * n_columns + column, stable=True)
        self.column = column[order].long()
        self.value = value[order].float()
        counts = torch.bincount(row.long(), minlength=n_rows)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.shape = (n_rows, n_columns)

    @classmethod
    def from_dense(cls, matrix: torch.Tensor) -> SparseRows:
        row, column = matrix.nonzero(as_tuple=True)
        return cls(row, column, matrix[row, column], (matrix.shape[0], matrix.shape[1]))

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_columns(self) -> int:
        return self.shape[1]

    def nonempty(self) -> torch.Tensor:
        """Ids of the rows with at least one stored entry."""
        return torch.nonzero(self.offsets[1:] > self.offsets[:-1]).flatten()

    def dense(self, rows: torch.Tensor, device: torch.device | None = None, *,
              pattern: bool = False) -> torch.Tensor:
        """``matrix[rows]`` as a dense ``[len(rows), n_columns]`` tensor (vectorised gather);
        ``pattern=True`` gives 1 at every stored entry instead (a stored zero included)."""
        rows = rows.cpu().long()
        starts = self.offsets[rows]
        counts = self.offsets[rows + 1] - starts
        slot = torch.repeat_interleave(torch.arange(rows.numel()), counts)
        # Position of each gathered entry in the CSR arrays: its row's start + rank within row.
        first = torch.cumsum(counts, 0) - counts
        entry = starts.repeat_interleave(counts) + torch.arange(int(counts.sum())) \
            - first.repeat_interleave(counts)
        out = torch.zeros(rows.numel(), self.n_columns)
        out[slot, self.column[entry]] = 1.0 if pattern else self.value[entry]
        return out if device is None else out.to(device)


def unit_ball(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled into the unit ball, ``w / max(1, ||w||)`` (DML Sec. 3.1: ``||W||_2 <= 1``)."""
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1.0)


class FeatureAutoencoder(nn.Module):
    """An MLP encoder ``n_in -> hidden... -> dim`` and the mirrored decoder (DML Eq. 2), ReLU
    between layers. ``variational=True`` is the VAE ablation (DML Table 11): the encoder gives a
    mean and a log-variance, training samples with the reparameterisation trick and adds
    ``kl_weight`` times the KL divergence to the unit Gaussian; the embedding is the mean."""

    def __init__(self, n_in: int, hidden: list[int], dim: int, *, variational: bool = False,
                 kl_weight: float = 1.0) -> None:
        super().__init__()
        self.variational = variational
        self.kl_weight = kl_weight
        self.encoder = MLP([n_in, *hidden, dim * (2 if variational else 1)], activation=nn.ReLU)
        self.decoder = MLP([dim, *reversed(hidden), n_in], activation=nn.ReLU)
        self.dim = dim

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.encoder(x)
        if not self.variational:
            return out, None
        return out[:, :self.dim], out[:, self.dim:].clamp(-10.0, 10.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of each row of ``x``, inside the unit ball."""
        return unit_ball(self._moments(x)[0])

    def loss(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared reconstruction error over the entries (Eq. 2), each entry weighted by
        ``weight`` when given (same shape as ``x``), plus the VAE's KL term."""
        mean, log_var = self._moments(x)
        if log_var is None:
            z, kl = mean, None
        else:
            z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
            kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(dim=1).mean()
        error = (self.decoder(unit_ball(z)) - x).pow(2)
        loss = (error if weight is None else error * weight).mean()
        # The KL term is per row, the reconstruction per entry: scale KL to the entries.
        return loss if kl is None else loss + self.kl_weight * kl / x.shape[1]
