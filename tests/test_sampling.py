from __future__ import annotations

import pytest
import torch

from cdrec.data.sampling import observed_keys, sample_negatives


def test_negatives_are_never_observed_and_are_seeded():
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(50, (2000,), generator=gen)
    items = torch.randint(30, (2000,), generator=gen)
    observed = observed_keys(users, items, 30)
    draw = sample_negatives(users.view(100, 20), 30, observed, torch.Generator().manual_seed(1))
    assert draw.shape == (100, 20)
    assert not torch.isin(users * 30 + draw.view(-1), observed).any()
    again = sample_negatives(users.view(100, 20), 30, observed, torch.Generator().manual_seed(1))
    assert torch.equal(draw, again)


def test_a_user_who_saw_everything_is_an_error_not_a_hang():
    users = torch.zeros(5, dtype=torch.long)
    observed = observed_keys(users, torch.arange(5), 5)
    with pytest.raises(ValueError, match="user 0 has interacted with nearly all 5 items"):
        sample_negatives(torch.zeros(3, dtype=torch.long), 5, observed, torch.Generator())
