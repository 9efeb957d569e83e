"""Losses shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss_terms(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """-log sigma(s_pos - s_neg) per pair (Rendle et al., 2009, Eq. 7); ``pos`` is [B], ``neg``
    is [B] or [B, n_neg] (each negative paired with its positive)."""
    if neg.dim() == pos.dim() + 1:
        pos = pos.unsqueeze(-1)
    return -F.logsigmoid(pos - neg)


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`bpr_loss_terms`."""
    return bpr_loss_terms(pos, neg).mean()


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """Sum of squares of the rows used in a batch, divided by the batch size (rows of the first)."""
    batch = max(1, tensors[0].shape[0])
    squares = [t.pow(2).sum() for t in tensors]
    total = squares[0]
    for square in squares[1:]:
        total = total + square
    return total / batch
