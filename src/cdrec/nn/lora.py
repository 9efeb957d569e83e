"""Low-rank adaptation of a frozen weight: ``W = W_0 + s * B A`` (Hu et al., "LoRA: Low-Rank
Adaptation of Large Language Models", ICLR 2022, Eq. 3 and Sec. 4.1).

``W_0`` is held as a buffer, so no optimiser ever sees it and it is saved with the module; only
``A`` (``[r, n_in]``, Gaussian) and ``B`` (``[n_out, r]``, zeros) are trained. With ``B = 0`` the
adapted weight starts exactly at ``W_0``: an adapter that has not been trained is the identity.
``s = scale`` is LoRA's ``alpha / r``; UCLR writes ``W = W_0 + B A`` (Sec. 3.5), so the default
is 1.

Two shapes of the same adapter:

* :class:`LoRAEmbedding` adapts an embedding table ``[n_rows, dim]`` (UCLR's domain-aware
  finetuning of the pretrained global user embedding, Sec. 3.5: ``A`` is ``[r, m]``, ``B`` is
  ``[|U|, r]``); a lookup costs the rows it reads, never the whole table;
* :class:`LoRALinear` adapts an ``nn.Linear`` (its weight and bias frozen).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LowRank(nn.Module):
    """The trainable pair ``A`` ``[rank, n_in]`` and ``B`` ``[n_out, rank]`` of a frozen
    ``[n_out, n_in]`` matrix."""

    def __init__(self, n_out: int, n_in: int, rank: int, *, scale: float,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if rank > min(n_out, n_in):
            raise ValueError(f"LoRA rank {rank} exceeds the adapted matrix's smaller side "
                             f"({n_out} x {n_in}): the update would not be low-rank")
        self.rank, self.scale = rank, scale
        # Hu et al. Sec. 4.1: A Gaussian, B zero. The Gaussian's scale is Kaiming's 1/sqrt(n_in)
        # (cdrec's choice; the paper only says "random Gaussian").
        self.lora_a = nn.Parameter(torch.randn(rank, n_in, generator=generator) * n_in ** -0.5)
        self.lora_b = nn.Parameter(torch.zeros(n_out, rank))

    def delta(self) -> torch.Tensor:
        """The whole update ``s * B A`` ``[n_out, n_in]``."""
        return self.scale * (self.lora_b @ self.lora_a)


class LoRAEmbedding(_LowRank):
    """A frozen embedding table ``W_0`` ``[n_rows, dim]`` plus a trainable rank-``rank`` update:
    row ``i`` is ``W_0[i] + s * B[i] A``."""

    weight_0: torch.Tensor  # buffer

    def __init__(self, weight: torch.Tensor, rank: int, *, scale: float = 1.0,
                 generator: torch.Generator | None = None, share: bool = False) -> None:
        """``share``: keep ``weight`` itself as ``W_0`` (its storage, not a copy) and leave it out
        of the state dict, for a table the owner already holds, freezes and saves (several
        adapters of one pretrained table then cost their ``A`` and ``B`` only)."""
        if weight.dim() != 2:
            raise ValueError(f"LoRAEmbedding adapts a 2-d table, got shape {tuple(weight.shape)}")
        super().__init__(weight.shape[0], weight.shape[1], rank, scale=scale,
                         generator=generator)
        self.register_buffer("weight_0", weight.detach() if share else weight.detach().clone(),
                             persistent=not share)

    @property
    def n_rows(self) -> int:
        return self.weight_0.shape[0]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # A state saved before the table was shared holds a copy of W_0; the owner loads the
        # table itself, so the copy is dropped rather than refused as an unexpected key.
        if "weight_0" in self._non_persistent_buffers_set:
            state_dict.pop(prefix + "weight_0", None)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.weight_0[index] + self.scale * (self.lora_b[index] @ self.lora_a)

    def merged(self) -> torch.Tensor:
        """The adapted table ``W_0 + s * B A`` (for scoring every row at once)."""
        return self.weight_0 + self.delta()


class LoRALinear(_LowRank):
    """A frozen ``nn.Linear`` (weight ``W_0``, bias ``b``) plus a trainable update:
    ``y = x (W_0 + s * B A)^T + b``."""

    weight_0: torch.Tensor  # buffer
    bias_0: torch.Tensor | None  # buffer

    def __init__(self, linear: nn.Linear, rank: int, *, scale: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(linear.out_features, linear.in_features, rank, scale=scale,
                         generator=generator)
        self.register_buffer("weight_0", linear.weight.detach().clone())
        self.register_buffer("bias_0", None if linear.bias is None
                             else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x W_0^T + s (x A^T) B^T: never forms the full update for a batch.
        out = F.linear(x, self.weight_0, self.bias_0)
        return out + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


def adapt_linears(module: nn.Module, rank: int, *, scale: float = 1.0,
                  generator: torch.Generator | None = None) -> nn.Module:
    """``module`` with every ``nn.Linear`` inside replaced, in place, by a :class:`LoRALinear`
    of it (layers narrower than ``rank`` are frozen as they are instead): the "finetune the whole
    network through low-rank updates" use of LoRA. Returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if rank <= min(child.in_features, child.out_features):
                setattr(module, name, LoRALinear(child, rank, scale=scale, generator=generator))
            else:
                child.requires_grad_(False)
        else:
            adapt_linears(child, rank, scale=scale, generator=generator)
    return module
