"""Vectorised negative sampling: uniform items a user has not interacted with."""

from __future__ import annotations

import torch

MAX_ROUNDS = 100


def pair_keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """One int64 key per (user, item) pair, for membership tests with ``torch.isin``."""
    return users.long() * n_items + items.long()


def observed_keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """Sorted unique keys of observed pairs: the set negatives are drawn outside of."""
    return torch.unique(pair_keys(users, items, n_items))


def sample_negatives(users: torch.Tensor, n_items: int, observed: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """One uniformly drawn unobserved item per entry of ``users`` (any shape).

    Draws all candidates at once, then redraws only the collisions with ``observed`` (the sorted
    keys from :func:`observed_keys`) until none is left; rounds are few unless a user has
    interacted with almost every item, which raises instead of looping forever.
    """
    shape = users.shape
    users = users.reshape(-1)
    items = torch.randint(n_items, users.shape, generator=generator)
    pending = torch.isin(pair_keys(users, items, n_items), observed).nonzero().squeeze(1)
    rounds = 0
    while pending.numel():
        rounds += 1
        if rounds > MAX_ROUNDS:
            worst = torch.bincount(users[pending]).argmax().item()
            raise ValueError(
                f"cannot sample unobserved items: user {worst} has interacted with nearly all "
                f"{n_items} items (still {pending.numel()} collisions after {MAX_ROUNDS} rounds)"
            )
        redraw = torch.randint(n_items, pending.shape, generator=generator)
        items[pending] = redraw
        hit = torch.isin(pair_keys(users[pending], redraw, n_items), observed)
        pending = pending[hit]
    return items.reshape(shape)
