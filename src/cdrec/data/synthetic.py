"""A seeded, skewed two-domain rating data set of any size, for scale benchmarks.

Real logs are skewed: a few items take most interactions and user activity is heavy-tailed. The
generator reproduces that shape so speed and memory are measured where they hurt:

* item popularity is Zipf-like (item ``j`` of a domain drawn with weight ``(j + 1) ** -zipf``,
  items shuffled so popular ids are not the small ones);
* each user's number of ratings per domain is log-normal (``user_sigma``), scaled so the data
  set has about ``n_ratings`` ratings; ``overlap`` of the users are active in both domains, the
  rest in one (half each);
* ratings are low rank: ``round(3.5 + b_u + b_i + p_u . q_i + noise)`` clipped to 1..5, with the
  user's taste ``(b_u, p_u)`` shared by both domains, so transfer has signal to find.

Sizes follow the scale issue's measurements: about 48 ratings per user and 97 per item and
domain (9.7 M ratings: 200 k users, 50 k items per domain). Duplicate (user, item) draws are
dropped, so a data set has slightly fewer rows than asked for. Everything is vectorised.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.features import FeatureTable

RATINGS_PER_USER = 48
RATINGS_PER_ITEM = 97


def skewed_two_domain(n_ratings: int, *, seed: int = 0, domains: tuple[str, str] = ("a", "b"),
                      rank: int = 8, zipf: float = 0.8, user_sigma: float = 1.0,
                      overlap: float = 0.5, noise: float = 0.5) -> CrossDomainData:
    """About ``n_ratings`` ratings over two domains (see module docstring), seeded."""
    if n_ratings < 1000:
        raise ValueError(f"n_ratings must be at least 1000, got {n_ratings}")
    if not 0 < overlap <= 1:
        raise ValueError(f"overlap must be in (0, 1], got {overlap}")
    gen = torch.Generator().manual_seed(seed)
    n_users = max(20, n_ratings // RATINGS_PER_USER)
    n_items = max(20, n_ratings // (2 * RATINGS_PER_ITEM))
    taste = torch.randn(n_users, rank, generator=gen) * (0.6 / math.sqrt(rank))
    user_bias = torch.randn(n_users, generator=gen) * 0.4
    # Which domains each user is active in: both for ``overlap`` of them, else one at random.
    both = torch.rand(n_users, generator=gen) < overlap
    only_first = torch.rand(n_users, generator=gen) < 0.5
    active = {domains[0]: both | only_first, domains[1]: both | ~only_first}
    out = {}
    for name in domains:
        users = active[name].nonzero().squeeze(1)
        activity = torch.exp(torch.randn(users.numel(), generator=gen) * user_sigma)
        per_user = (activity / activity.sum() * (n_ratings / 2)).round().long().clamp_min(1)
        user = users.repeat_interleave(per_user)
        weights = (torch.arange(n_items, dtype=torch.float64) + 1).pow(-zipf)
        ranked = torch.multinomial(weights, user.numel(), replacement=True, generator=gen)
        item = torch.randperm(n_items, generator=gen)[ranked]
        keys = torch.unique(user * n_items + item)  # one rating per (user, item)
        user, item = keys // n_items, keys % n_items
        q = torch.randn(n_items, rank, generator=gen) * (0.6 / math.sqrt(rank))
        item_bias = torch.randn(n_items, generator=gen) * 0.4
        score = (3.5 + user_bias[user] + item_bias[item] + (taste[user] * q[item]).sum(1)
                 + torch.randn(user.numel(), generator=gen) * noise)
        rating = score.round().clamp(1, 5).float()
        out[name] = Domain(name, np.arange(n_items), Interactions(user, item, rating),
                           rating_scale=(1.0, 5.0))
    return CrossDomainData(np.arange(n_users), out, name=f"synthetic_{n_ratings}_seed{seed}")


def resample_users(data: CrossDomainData, factor: float, *, seed: int = 0) -> CrossDomainData:
    """A real data set grown ``factor`` times by drawing its users with replacement: each draw
    is a new user with all the drawn user's interactions in every domain (so overlap users stay
    overlap users and each domain grows about ``factor`` times), items unchanged; user feature
    tables are copied with their users (given_test is dropped: it would name old users). For scale
    checks on real rating distributions; vectorised, no Python loop over users."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    gen = torch.Generator().manual_seed(seed)
    n_new = max(1, round(data.n_users * factor))
    drawn = torch.randint(0, data.n_users, (n_new,), generator=gen)  # new user -> original
    domains = {}
    copied: dict[int, FeatureTable] = {}
    for name, dom in data.domains.items():
        inter = dom.interactions
        order = torch.argsort(inter.user, stable=True)
        counts = torch.bincount(inter.user, minlength=data.n_users)
        starts = torch.cumsum(counts, 0) - counts
        taken = counts[drawn]
        new_user = torch.repeat_interleave(torch.arange(n_new), taken)
        # Row k of the copy is row (start of its original user + k's offset within that user).
        offset = torch.arange(int(taken.sum())) - torch.repeat_interleave(
            torch.cumsum(taken, 0) - taken, taken)
        rows = order[torch.repeat_interleave(starts[drawn], taken) + offset]
        timestamp = None if inter.timestamp is None else inter.timestamp[rows]
        users = dom.user_features
        if users is not None:  # a table shared by several domains stays shared
            if id(users) not in copied:
                copied[id(users)] = users.select(drawn)
            users = copied[id(users)]
        domains[name] = replace(dom.with_interactions(Interactions(
            new_user, inter.item[rows], inter.rating[rows], timestamp)), user_features=users)
    originals = np.asarray(data.user_ids, dtype=str)[drawn.numpy()]
    user_ids = np.char.add(np.char.add(originals, "#"), np.arange(n_new).astype(str))
    return CrossDomainData(user_ids=user_ids, domains=domains,
                           name=f"{data.name}x{factor:g}", provenance=data.provenance)
