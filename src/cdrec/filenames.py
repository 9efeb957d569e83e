"""File names made from labels (model labels, stage names) that may hold any character."""

from __future__ import annotations


def safe_name(label: str) -> str:
    """``label`` with every character but letters, digits and ``-_.`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
