"""Transforms of ``CrossDomainData`` that return new data: k-core filtering, binarisation.

Both work per domain on tensors (no Python loops over rows) and keep the shared user space as it
is: a user filtered out of one domain keeps their index (and their rows in other domains), so
user feature tables stay as they are; item feature tables follow the items kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import replace

import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.schema import DataWarning


def _domain_names(data: CrossDomainData, domains: Iterable[str] | None) -> list[str]:
    if domains is None:
        return list(data.domains)
    names = [domains] if isinstance(domains, str) else list(domains)
    for name in names:
        data[name]  # raises a KeyError naming the available domains
    return names


def _core_rows(user: torch.Tensor, item: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the rows in the k-core: every user and item there has >= k rows."""
    index = torch.arange(user.shape[0])
    while index.numel() > 0:
        u, i = user[index], item[index]
        keep = (torch.bincount(u)[u] >= k) & (torch.bincount(i)[i] >= k)
        if bool(keep.all()):
            break
        index = index[keep]
    return index


def _k_core_domain(dom: Domain, k: int) -> Domain:
    inter = dom.interactions
    kept = inter.select(_core_rows(inter.user, inter.item, k))
    if len(kept) == 0:
        raise ValueError(f"the {k}-core of domain {dom.name!r} is empty: no user and item there "
                         f"have {k} or more interactions with each other")
    present = torch.zeros(dom.n_items, dtype=torch.bool)
    present[kept.item] = True
    new_index = torch.full((dom.n_items,), -1, dtype=torch.long)
    new_index[present] = torch.arange(int(present.sum()))
    item_ids = dom.item_ids[present.numpy()]
    interactions = Interactions(kept.user, new_index[kept.item], kept.rating, kept.timestamp)
    given_test = dom.given_test
    if given_test is not None:
        in_core = present[given_test.item]
        dropped = int((~in_core).sum())
        if dropped:
            warnings.warn(
                f"k_core(k={k}): dropped {dropped} of {len(given_test)} given_test rows of "
                f"domain {dom.name!r} whose item is not in the {k}-core", DataWarning,
                stacklevel=3)
        given_test = given_test.select(in_core)
        given_test = replace(given_test, item=new_index[given_test.item])
    item_features = None if dom.item_features is None else dom.item_features.select(present)
    return replace(dom, item_ids=item_ids, interactions=interactions, given_test=given_test,
                   item_features=item_features)


def k_core(data: CrossDomainData, k: int, domains: Iterable[str] | None = None
           ) -> CrossDomainData:
    """Iterative k-core of each domain (default: all): users and items with >= ``k`` rows.

    Rows are removed until every remaining user and item of the domain has at least ``k`` rows
    in it. Items left without rows are removed and the domain's items re-indexed in their
    previous order (``item_ids`` follows). Users keep their index in the shared space.
    ``given_test`` rows whose item left the core are dropped (with a ``DataWarning`` giving the
    count); its users are kept. ``item_features`` keep the rows of the items kept (not
    re-standardised); ``user_features`` are unchanged.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    new = dict(data.domains)
    for name in _domain_names(data, domains):
        new[name] = _k_core_domain(data[name], k)
    return data.replace_domains(new)


def _positives(inter: Interactions, threshold: float | None) -> Interactions:
    if threshold is not None:
        inter = inter.select(inter.rating >= threshold)
    return inter.with_rating(torch.ones(len(inter), dtype=torch.float32))


def binarize(data: CrossDomainData, threshold: float | None = None,
             domains: Iterable[str] | None = None) -> CrossDomainData:
    """Explicit ratings -> implicit feedback (``rating_scale`` None, every rating 1.0).

    ``threshold=None`` keeps every observed interaction as a positive; a threshold keeps only
    rows with ``rating >= threshold``. ``given_test`` gets the same rule. Domains that are
    already implicit are left as they are. The item space is not changed (items may be left
    without positives; use :func:`k_core` to remove them).
    """
    new = dict(data.domains)
    for name in _domain_names(data, domains):
        dom = data[name]
        if dom.implicit:
            continue
        interactions = _positives(dom.interactions, threshold)
        if len(interactions) == 0:
            raise ValueError(f"binarize(threshold={threshold}) leaves domain {name!r} without "
                             f"interactions (its rating scale is {dom.rating_scale})")
        test = None if dom.given_test is None else _positives(dom.given_test, threshold)
        new[name] = replace(dom, rating_scale=None, interactions=interactions, given_test=test)
    return data.replace_domains(new)
