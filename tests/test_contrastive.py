"""UCLR's user-aware contrastive loss (Eq. 3) and iSogCLR's per-user temperature update."""

from __future__ import annotations

import math

import pytest
import torch

from cdrec.nn.contrastive import IndividualTemperatures, contrastive_eq3, cosine_similarities

# Three users: unit vectors in the plane, so the cosine similarities are read off by hand.
E = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
E_MASKED = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
R = 1 / math.sqrt(2)
# s[i][k] = cos(e_i, e'_k)
S = [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [R, R, -R]]


def test_cosine_similarities_by_hand() -> None:
    assert torch.allclose(cosine_similarities(E, E_MASKED), torch.tensor(S, dtype=torch.float64))


def test_eq3_matches_a_hand_computed_value_on_three_users() -> None:
    tau = torch.tensor([0.5, 1.0, 0.2], dtype=torch.float64)
    expected = []
    for i in range(3):
        t = float(tau[i])
        negatives = sum(math.exp(S[i][k] / t) for k in range(3) if k != i)
        expected.append(-t * math.log(math.exp(S[i][i] / t) / negatives))
    # e.g. user 0: -0.5 log(e^2 / (e^0 + e^-2)) = -0.5 (2 - log(1.1353)) = -0.9365
    assert expected[0] == pytest.approx(-0.5 * (2 - math.log(1 + math.exp(-2))))
    assert torch.allclose(contrastive_eq3(E, E_MASKED, tau),
                          torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def _module(n: int = 3, **kwargs: object) -> IndividualTemperatures:
    settings: dict = {"tau_init": 0.5, "gamma": 1.0, "symmetric": False, **kwargs}
    return IndividualTemperatures(n, **settings).double()


def test_the_network_gradient_is_that_of_eq3() -> None:
    """With the exact negative mass (first visit), the surrogate's gradient equals Eq. 3's
    (the mean over the batch), whatever rho: tau_i cancels from the network's gradient."""
    for rho in (0.1, 0.7):
        temps = _module(rho=rho)
        users = torch.tensor([0, 1, 2])
        a, b = E.clone().requires_grad_(), E_MASKED.clone().requires_grad_()
        temps(a, b, users).backward()
        a_ref, b_ref = E.clone().requires_grad_(), E_MASKED.clone().requires_grad_()
        contrastive_eq3(a_ref, b_ref, torch.full((3,), 0.5, dtype=torch.float64)
                        ).mean().backward()
        assert a.grad is not None and a_ref.grad is not None
        assert b.grad is not None and b_ref.grad is not None
        assert torch.allclose(a.grad, a_ref.grad, atol=1e-12)
        assert torch.allclose(b.grad, b_ref.grad, atol=1e-12)


def test_one_temperature_step_by_hand() -> None:
    rho, eta, beta = 0.4, 0.03, 0.5
    temps = _module(rho=rho, eta=eta, beta=beta, grad_clip=100.0)
    temps(E, E_MASKED, torch.tensor([0, 1, 2]))
    for i in range(3):
        logits = [S[i][k] / 0.5 for k in range(3) if k != i]
        mean = sum(math.exp(x) for x in logits) / 2
        p = [math.exp(x) / (2 * mean) for x in logits]
        kl = sum(q * math.log(q / 0.5) for q in p)  # KL(p || uniform over 2 negatives)
        g = rho - kl  # = log u + rho - mean_k w_k s_k / tau with the exact u
        assert float(temps.momentum[i]) == pytest.approx(beta * g, abs=1e-12)
        assert float(temps.tau[i]) == pytest.approx(0.5 - eta * beta * g, abs=1e-12)
        assert float(temps.log_u[0, i]) == pytest.approx(math.log(mean), abs=1e-12)


def test_moving_average_of_the_negative_mass() -> None:
    temps = _module(gamma=0.25, learn=False)
    users = torch.tensor([0, 1, 2])
    temps(E, E_MASKED, users)
    first = temps.log_u[0].exp().clone()
    temps(E, -E_MASKED, users)  # another batch for the same users
    batch = torch.tensor([sum(math.exp(-S[i][k] / 0.5) for k in range(3) if k != i) / 2
                          for i in range(3)], dtype=torch.float64)
    assert torch.allclose(temps.log_u[0].exp(), 0.75 * first + 0.25 * batch, atol=1e-12)


def test_temperatures_stay_in_bounds_and_move_per_user() -> None:
    gen = torch.Generator().manual_seed(0)
    stream = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    masked = stream + 0.3 * torch.randn(16, 8, generator=gen, dtype=torch.float64)
    users = torch.arange(16)
    # rho above log n: every g_i > 0 and the temperatures sink, but not below tau_min.
    low = IndividualTemperatures(16, tau_init=0.5, tau_min=0.05, eta=0.5, rho=5.0).double()
    # rho <= 0: every g_i < 0 and the temperatures rise to tau_max, not above.
    high = IndividualTemperatures(16, tau_init=0.5, tau_max=0.9, eta=0.5, rho=-1.0).double()
    for _ in range(50):
        low(stream, masked, users)
        high(stream, masked, users)
    assert torch.equal(low.tau, torch.full((16,), 0.05, dtype=torch.float64))
    assert torch.equal(high.tau, torch.full((16,), 0.9, dtype=torch.float64))
    # An interior rho gives interior, user-specific temperatures.
    mid = IndividualTemperatures(16, tau_init=0.5, eta=0.05, rho=0.3).double()
    for _ in range(200):
        mid(stream, masked, users)
    assert float(mid.tau.min()) > 1e-5 and float(mid.tau.max()) < 1.0
    assert float(mid.tau.std()) > 1e-3


def test_eq3_read_literally_only_ever_lowers_the_temperatures() -> None:
    """Eq. 3 is iSogCLR's objective with rho = log n: its tau-derivative is the entropy of
    p_i, never negative, so every temperature only sinks (towards tau_min, ever more slowly as
    p_i sharpens and its entropy vanishes)."""
    gen = torch.Generator().manual_seed(1)
    stream = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    masked = stream + torch.randn(8, 4, generator=gen, dtype=torch.float64)
    temps = IndividualTemperatures(8, tau_init=1.0, eta=0.2, gamma=1.0, beta=1.0,
                                   rho=math.log(7)).double()
    previous = temps.tau.clone()
    for _ in range(300):
        temps(stream, masked, torch.arange(8))
        assert bool((temps.tau <= previous).all())
        previous = temps.tau.clone()
    assert float(temps.tau.max()) < 0.1  # from 1.0


def test_eval_mode_and_fixed_temperatures_leave_the_state_alone() -> None:
    temps = _module(gamma=0.5)
    temps.eval()
    temps(E, E_MASKED, torch.tensor([0, 1, 2]))
    assert not bool(temps.seen.any()) and torch.equal(temps.tau, torch.full((3,), 0.5,
                                                                           dtype=torch.float64))
    fixed = _module(learn=False).train()
    fixed(E, E_MASKED, torch.tensor([0, 1, 2]))
    assert bool(fixed.seen.all())  # u is still estimated
    assert torch.equal(fixed.tau, torch.full((3,), 0.5, dtype=torch.float64))


def test_symmetric_averages_both_directions() -> None:
    users = torch.tensor([0, 1, 2])
    both = IndividualTemperatures(3, tau_init=0.5, symmetric=True).double()
    one = _module(gamma=0.8)
    other = _module(gamma=0.8)
    loss = both(E, E_MASKED, users)
    expected = (one(E, E_MASKED, users) + other(E_MASKED, E, users)) / 2
    assert float(loss) == pytest.approx(float(expected), abs=1e-12)
    g = (one.momentum + other.momentum) / 2  # beta * g of each direction, averaged
    assert torch.allclose(both.momentum, g, atol=1e-12)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        IndividualTemperatures(3, tau_init=2.0)
    with pytest.raises(ValueError, match="gamma and beta"):
        IndividualTemperatures(3, tau_init=0.5, gamma=0.0)
    with pytest.raises(ValueError, match="two distinct users"):
        _module()(E[:1], E_MASKED[:1], torch.tensor([0]))
