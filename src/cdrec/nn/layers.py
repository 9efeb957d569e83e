"""MLP blocks."""

from __future__ import annotations

from itertools import pairwise

from torch import nn


class MLP(nn.Sequential):
    """Linear layers with an activation between them (after the last too with
    ``output_activation``)."""

    def __init__(self, sizes: list[int], activation: type[nn.Module] = nn.Tanh,
                 dropout: float = 0.0, output_activation: bool = False) -> None:
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        if output_activation:
            layers.append(activation())
        super().__init__(*layers)
