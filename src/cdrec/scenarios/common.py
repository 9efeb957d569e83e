"""Helpers shared by the scenarios: parameter checks, seeded draws, held-out pair filtering and
per-domain evaluator assembly. Imports no scenario, so every scenario module can use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cdrec.data.dataset import CrossDomainData, Interactions
from cdrec.data.sampling import observed_keys, pair_keys
from cdrec.evaluation import MultiDomainEvaluator
from cdrec.split import Evaluator


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value}")


def permute(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of range(n); scenarios draw every random choice from the seed."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def in_sorted(query: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """``torch.isin(query, sorted_keys)`` for sorted ``sorted_keys``, by binary search (cheaper
    than ``isin``'s sort of both arrays)."""
    if sorted_keys.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, query).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[pos] == query


def drop_pairs(inter: Interactions, held: Interactions, n_items: int) -> Interactions:
    """The rows of ``inter`` whose (user, item) pair is not one of ``held``'s."""
    held_keys = observed_keys(held.user, held.item, n_items)
    return inter.select(~in_sorted(pair_keys(inter.user, inter.item, n_items), held_keys))


def evaluated_domains(data: CrossDomainData, domains: Sequence[str] | None) -> list[str]:
    """The domain names a multi-domain protocol evaluates (default: all), checked to exist."""
    if domains is None:
        return list(data.domains)
    for name in domains:
        data[name]  # raises a KeyError that names the available domains
    return list(domains)


def check_domains(domains: Sequence[str] | None) -> tuple[str, ...] | None:
    """Constructor-time check of a ``domains`` parameter: non-empty, names, no repeats."""
    if domains is None:
        return None
    if isinstance(domains, str):
        raise TypeError(f"domains must be a list of domain names, got the string {domains!r}")
    names = tuple(domains)
    if not names:
        raise ValueError("domains is empty: give at least one domain name, or null for all")
    if len(set(names)) != len(names):
        raise ValueError(f"domains repeats a name: {list(names)}")
    return names


def combine_evaluators(parts: dict[str, Evaluator]) -> Evaluator:
    """One domain: its own evaluator (it has ``.domain``); several: their combination."""
    if len(parts) == 1:
        return next(iter(parts.values()))
    return MultiDomainEvaluator(parts)
