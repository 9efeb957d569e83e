"""Contrastive losses with a temperature per entity (user), as UCLR uses them.

* :func:`contrastive_eq3` is UCLR's user-aware contrastive loss exactly as written (Yang et al.,
  "Not All Embeddings are Created Equal: Towards Robust Cross-domain Recommendation via
  Contrastive Learning", WWW 2024, Eq. 3), on one batch:
  ``L_i = -tau_i log( exp(s_ii / tau_i) / sum_{k != i} exp(s_ik / tau_i) )`` with ``s`` the
  cosine similarity of anchor ``i`` and the other stream's ``k``. It is the reference value; the
  training loss is the stochastic estimator below.

* :class:`IndividualTemperatures` trains the temperatures the way the method UCLR builds on
  does: iSogCLR (Qiu, Hu, Yuan, Zhou, Zhang, Yang, "Not All Semantics are Created Equal:
  Contrastive Self-supervised Learning with Automatic Temperature Individualization", ICML
  2023; reference code in LibAUC ``libauc/losses/contrastive.py`` and the authors'
  zhqiu/contrastive-learning-iSogCLR). Per user ``i`` it keeps, indexed by user id:

  - ``u_i``, a moving average of the negatives' mass ``mean_k exp(s_ik / tau_i)`` (kept as
    ``log u_i``, so tiny temperatures do not overflow), updated
    ``u_i <- (1 - gamma) u_i + gamma * mean_k exp(s_ik / tau_i)`` (``u_i`` = the batch value on
    a user's first visit);
  - ``tau_i`` and the momentum ``m_i`` of its gradient
    ``g_i = log u_i + rho - mean_k[(exp(s_ik / tau_i) / u_i) * s_ik / tau_i]``:
    ``m_i <- (1 - beta) m_i + beta g_i``, ``tau_i <- clip(tau_i - eta m_i, tau_min, tau_max)``.

  ``g_i`` is the derivative in ``tau_i`` of iSogCLR's objective
  ``F_i = tau_i log mean_k exp((s_ik - s_ii) / tau_i) + tau_i rho`` (with the exact mean in place
  of ``u_i``); it is ``rho - KL(p_i || uniform)``, ``p_i = softmax_k(s_ik / tau_i)``, so a
  temperature settles where that divergence equals ``rho`` (``0 < rho < log n``). The network
  gets the gradient of ``F_i`` through the surrogate
  ``mean_k[w_ik s_ik] - s_ii`` with the weights ``w_ik = exp(s_ik / tau_i) / u_i`` held
  constant: ``tau_i`` cancels from the network's gradient.

  Why not Eq. 3 itself: Eq. 3 is ``F_i`` with ``rho = log n`` (a sum over the negatives is ``n``
  times their mean), whose ``tau`` derivative is the entropy of ``p_i``, never negative, so
  every temperature would descend to ``tau_min`` (``tests/test_contrastive.py`` shows it). The
  network's gradient is the same for any ``rho``.

  Order (as in both references): ``tau_i`` is read once; ``u_i``, the weights and ``g_i`` use
  that value; the new ``tau_i`` acts from the user's next batch on. ``g_i`` is clipped to
  ``+-grad_clip`` (the authors' guard against a stale ``u_i``).

  Two streams, as UCLR's dual-stream autoencoder has them (the reconstruction stream ``e`` and
  the masked generation stream ``e'``): with ``symmetric=True`` both directions are contrasted
  (anchor ``e_i`` against ``e'_k``, and ``e'_i`` against ``e_k``), each with its own ``u``, one
  ``tau_i`` per user, the two ``g_i`` averaged and the two surrogates averaged;
  ``symmetric=False`` is Eq. 3's single direction.

A fixed global temperature (UCLR's CL-AE ablation) is the same estimator with ``learn=False``
and every ``tau_i`` at ``tau_init``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cosine_similarities(anchors: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` cosine similarity of every anchor with every other-stream vector."""
    return F.normalize(anchors, dim=-1) @ F.normalize(others, dim=-1).T


def contrastive_eq3(anchors: torch.Tensor, others: torch.Tensor, tau: torch.Tensor
                    ) -> torch.Tensor:
    """UCLR Eq. 3 per anchor (``[B]``): ``-tau_i log(exp(s_ii/tau_i) / sum_{k != i}
    exp(s_ik/tau_i))``, the positive ``k = i`` left out of the denominator as written."""
    sim = cosine_similarities(anchors, others)
    logits = sim / tau.unsqueeze(1)
    off_diagonal = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    negatives = torch.logsumexp(logits.masked_fill(~off_diagonal, -math.inf), dim=1)
    return -tau * (logits.diagonal() - negatives)


class IndividualTemperatures(nn.Module):
    """Per-user temperatures and negative-mass estimates (see module docstring); call it on a
    batch to get the network's loss, which also steps the batch users' temperatures when the
    module is in training mode."""

    tau: torch.Tensor  # buffers, one entry per user id
    momentum: torch.Tensor
    log_u: torch.Tensor  # [directions, n_users]
    seen: torch.Tensor

    def __init__(self, n_users: int, *, tau_init: float, tau_min: float = 1e-5,
                 tau_max: float = 1.0, rho: float = 0.4, gamma: float = 0.8, eta: float = 0.03,
                 beta: float = 0.5, grad_clip: float = 3.0, learn: bool = True,
                 symmetric: bool = True) -> None:
        super().__init__()
        if not tau_min <= tau_init <= tau_max:
            raise ValueError(f"tau_init {tau_init} lies outside [tau_min, tau_max] = "
                             f"[{tau_min}, {tau_max}]")
        if not 0 < gamma <= 1 or not 0 < beta <= 1:
            raise ValueError(f"gamma and beta weigh the new value and lie in (0, 1]; got "
                             f"gamma={gamma}, beta={beta}")
        self.tau_min, self.tau_max, self.rho = tau_min, tau_max, rho
        self.gamma, self.eta, self.beta, self.grad_clip = gamma, eta, beta, grad_clip
        self.learn, self.symmetric = learn, symmetric
        directions = 2 if symmetric else 1
        self.register_buffer("tau", torch.full((n_users,), float(tau_init)))
        self.register_buffer("momentum", torch.zeros(n_users))
        self.register_buffer("log_u", torch.zeros(directions, n_users))
        self.register_buffer("seen", torch.zeros(directions, n_users, dtype=torch.bool))

    def forward(self, stream: torch.Tensor, masked_stream: torch.Tensor,
                users: torch.Tensor) -> torch.Tensor:
        """The surrogate loss (mean over the batch) of ``stream`` (``e``, ``[B, d]``) against
        ``masked_stream`` (``e'``) for distinct ``users`` ``[B]``; updates ``u`` and, when
        ``learn``, ``tau`` of those users in training mode."""
        if users.numel() < 2:
            raise ValueError("a contrastive batch needs at least two distinct users")
        tau = self.tau[users]  # read once: this step's temperatures
        pairs = [(stream, masked_stream)]
        if self.symmetric:
            pairs.append((masked_stream, stream))
        losses, grads = [], []
        for direction, (anchors, others) in enumerate(pairs):
            loss, grad = self._direction(anchors, others, users, tau, direction)
            losses.append(loss)
            grads.append(grad)
        if self.training and self.learn:
            with torch.no_grad():
                g = (torch.stack(grads).mean(0)).clamp(-self.grad_clip, self.grad_clip)
                m = (1 - self.beta) * self.momentum[users] + self.beta * g
                self.momentum[users] = m
                self.tau[users] = (tau - self.eta * m).clamp(self.tau_min, self.tau_max)
        return torch.stack(losses).mean()

    def _direction(self, anchors: torch.Tensor, others: torch.Tensor, users: torch.Tensor,
                   tau: torch.Tensor, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
        sim = cosine_similarities(anchors, others)
        n = sim.shape[0] - 1
        off_diagonal = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        with torch.no_grad():
            logits = (sim / tau.unsqueeze(1)).masked_fill(~off_diagonal, -math.inf)
            log_batch = torch.logsumexp(logits, dim=1) - math.log(n)  # log mean_k exp(s/tau)
            log_u = log_batch
            if self.training:
                old, seen = self.log_u[direction, users], self.seen[direction, users]
                mixed = torch.logaddexp(old + math.log1p(-self.gamma) if self.gamma < 1
                                        else torch.full_like(old, -math.inf),
                                        log_batch + math.log(self.gamma))
                log_u = torch.where(seen, mixed, log_batch)
                self.log_u[direction, users] = log_u
                self.seen[direction, users] = True
            weights = (logits - log_u.unsqueeze(1)).exp()  # exp(s/tau) / u; 0 on the diagonal
            grad_tau = log_u + self.rho - (weights * logits.masked_fill(~off_diagonal, 0.0)
                                           ).sum(1) / n
        surrogate = (weights * sim).sum(1) / n - sim.diagonal()
        return surrogate.mean(), grad_tau
