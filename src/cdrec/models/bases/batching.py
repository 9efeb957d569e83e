"""Training batches of a base: fixed ratings, or positives with negatives re-sampled every
epoch (vectorised), as the ``epoch_data`` callback of ``cdrec.train``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys, sample_negatives


def epoch_batches(interactions: Interactions, n_items: int, implicit: bool, n_neg: int,
                  observed: torch.Tensor | None = None
                  ) -> Callable[[torch.Generator], list[torch.Tensor]]:
    """The ``epoch_data`` callback of the loop: fixed ratings, or fresh negatives each epoch."""
    if not implicit:
        return lambda gen: [interactions.user, interactions.item, interactions.rating]
    if observed is None:
        observed = observed_keys(interactions.user, interactions.item, n_items)

    def draw(gen: torch.Generator) -> list[torch.Tensor]:
        users = interactions.user.repeat_interleave(n_neg)
        neg = sample_negatives(users, n_items, observed, gen).view(-1, n_neg)
        return [interactions.user, interactions.item, neg]

    return draw
