"""An independent check of cdrec's explicit cold-start figures: the scale issue's "simple
reference" (a biased MF per domain, full-batch Adam, then a closed-form ridge map of the user
state [p_u, b_u]) written in plain torch, on cdrec's own splits and evaluators.

It does not use cdrec's bases or training loop on purpose: it is a second implementation to
compare against. The regulariser's form is the question it answers, so it is a choice:

- ``per-rating``: mean over ratings of (r - r_hat)^2 + reg (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)
  (each row penalised once per rating it is in: cdrec's row-wise L2);
- ``adam-wd``: the mean squared error, Adam's coupled ``weight_decay=reg``;
- ``adamw``: the mean squared error, AdamW's decoupled ``weight_decay=reg``;
- ``summed``: the summed squared error, Adam's ``weight_decay=reg``.

The ridge penalty is chosen per seed on the cold-start validation users. Example (full Douban
Book -> Music, beta 0.2):

    python benchmarks/reference_recipe.py --data ../shared/data/douban --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import torch

from cdrec.data.readers import read_douban
from cdrec.scenarios import build_scenario

RIDGE_GRID = (0.1, 1.0, 10.0, 100.0)


class _Factors:
    def __init__(self, p: torch.Tensor, q: torch.Tensor, bu: torch.Tensor, bi: torch.Tensor,
                 mu: float) -> None:
        self.p, self.q, self.bu, self.bi, self.mu = p, q, bu, bi, mu

    def state(self, users: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.p[users], self.bu[users, None]], 1)


def fit_mf(users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, n_users: int,
           n_items: int, args: argparse.Namespace, seed: int) -> _Factors:
    """Full-batch biased MF (every epoch is one Adam step over all ratings)."""
    g = torch.Generator().manual_seed(seed)
    p = (torch.randn(n_users, args.dim, generator=g) * 0.1).requires_grad_()
    q = (torch.randn(n_items, args.dim, generator=g) * 0.1).requires_grad_()
    bu = torch.zeros(n_users, requires_grad=True)
    bi = torch.zeros(n_items, requires_grad=True)
    mu = float(ratings.mean())
    params = [p, q, bu, bi]
    if args.reg_mode == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.reg)
    elif args.reg_mode in ("adam-wd", "summed"):
        opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.reg)
    else:
        opt = torch.optim.Adam(params, lr=args.lr)
    for _ in range(args.epochs):
        opt.zero_grad()
        err = (mu + bu[users] + bi[items] + (p[users] * q[items]).sum(-1) - ratings).pow(2)
        loss = err.sum() if args.reg_mode == "summed" else err.mean()
        if args.reg_mode == "per-rating":
            loss = loss + args.reg * (p[users].pow(2).sum(-1) + q[items].pow(2).sum(-1)
                                      + bu[users] ** 2 + bi[items] ** 2).mean()
        loss.backward()
        opt.step()
    return _Factors(p.detach(), q.detach(), bu.detach(), bi.detach(), mu)


class _Predictor:
    """A cold user's target state mapped from their source state (``weights`` is None: the
    item-side floor mu + b_i)."""

    device = torch.device("cpu")

    def __init__(self, source: _Factors, target: _Factors, weights: torch.Tensor | None) -> None:
        self.source, self.target, self.weights = source, target, weights

    def check_fitted(self) -> None:
        pass

    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        t = self.target
        if self.weights is None:
            return t.mu + t.bi[items]
        x = torch.cat([self.source.state(users), torch.ones(len(users), 1)], 1)
        state = x @ self.weights
        return t.mu + state[:, -1] + t.bi[items] + (state[:, :-1] * t.q[items]).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/douban")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--reg-mode", choices=["per-rating", "adam-wd", "adamw", "summed"],
                    default="per-rating")
    ap.add_argument("--reg", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--dim", type=int, default=16)
    args = ap.parse_args()

    data = read_douban(args.data, domains=["book", "music"])
    scenario = build_scenario("coldstart", {"source": "book", "target": "music",
                                            "test_fraction": args.test_fraction,
                                            "validation_fraction": 0.1})
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        split = scenario.split(data, seed=seed)
        assert split.validation is not None
        train = split.train.data
        fitted = {}
        for domain in ("book", "music"):
            it = train[domain].interactions
            fitted[domain] = fit_mf(it.user, it.item, it.rating, train.n_users,
                                    train[domain].n_items, args, seed)
        source, target = fitted["book"], fitted["music"]
        overlap = train["music"].users()
        overlap = overlap[torch.isin(overlap, train["book"].users())]
        x = torch.cat([source.state(overlap), torch.ones(len(overlap), 1)], 1)
        y = target.state(overlap)
        floor = _Predictor(source, target, None)
        best = None
        for penalty in RIDGE_GRID:
            weights = torch.linalg.solve(x.T @ x + penalty * torch.eye(x.shape[1]), x.T @ y)
            score = split.validation.evaluate(_Predictor(source, target, weights))["RMSE"]
            if best is None or score < best[0]:
                best = (score, penalty, weights)
        assert best is not None
        mapped = _Predictor(source, target, best[2])
        rows.append((seed, split.test.evaluate(floor), split.test.evaluate(mapped), best[1]))
        f, m = rows[-1][1], rows[-1][2]
        print(f"seed {seed}: floor (mu + b_i) {f['MAE']:.4f} / {f['RMSE']:.4f}; ridge map "
              f"(penalty {best[1]:g}, chosen on validation) {m['MAE']:.4f} / {m['RMSE']:.4f}; "
              f"{time.perf_counter() - t0:.0f} s")
    for name, idx in (("floor", 1), ("ridge map", 2)):
        mae = torch.tensor([r[idx]["MAE"] for r in rows])
        rmse = torch.tensor([r[idx]["RMSE"] for r in rows])
        if len(rows) > 1:
            summary = (f"MAE {mae.mean():.4f} ± {mae.std():.4f} / "
                       f"RMSE {rmse.mean():.4f} ± {rmse.std():.4f}")
        else:
            summary = f"MAE {mae.mean():.4f} / RMSE {rmse.mean():.4f}"
        print(f"{name}: {summary} "
              f"({args.reg_mode}, reg {args.reg:g}, lr {args.lr:g}, {args.epochs} full-batch "
              f"epochs, dim {args.dim})")


if __name__ == "__main__":
    main()
