"""Throughput and peak memory of MF training epochs, and of cold-start evaluation.

    python benchmarks/bench_mf.py                      # full Douban (../shared/data/douban)
    python benchmarks/bench_mf.py --ratings 1e6 3e6 1e7 [--batch-size 4096] [--epochs 2]

Douban: interactions per second of one explicit MF epoch (squared loss) and one implicit epoch
(sampled BCE, 4 negatives, sampling included), dense and sparse (row-wise lazy Adam), and
scored pairs per second of the explicit (MAE/RMSE) and implicit (AUC/NDCG@10) evaluations.

``--ratings``: the seeded skewed synthetic data set (``cdrec.data.synthetic``) at each size, one
squared-loss MF epoch on domain ``a`` with the dense and the sparse optimiser, each size in its
own process so peak memory is per size; then the log-log slope of epoch time against ratings
(1.0 is linear). Every figure is the median over ``--epochs`` epochs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from cdrec.data.dataset import CrossDomainData
from cdrec.data.readers import read_douban
from cdrec.models import build_model
from cdrec.models.bases.mf import MFConfig
from cdrec.models.bases.pretrain import fit_base, new_base
from cdrec.runtime import peak_rss_mib
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.split import TrainView
from cdrec.train import FitContext, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def epoch_rate(train: TrainView, domain: str, epochs: int, device: torch.device,
               sparse: bool, batch_size: int) -> float:
    """Median rows per second of one MF epoch (no holdout, no validation: the step alone)."""
    config = MFConfig(epochs=1, holdout=0.0, sparse=sparse, batch_size=batch_size)
    ctx = FitContext(device=device, progress=False)
    mf = new_base(train, domain, "MF", config, ctx)
    inter = train.data[domain].interactions
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fit_base(mf, inter, train.data[domain].n_items, context=ctx, stage="bench")
        rates.append(len(inter) / (time.perf_counter() - t0))
    return statistics.median(rates)


def time_eval(split, model, repeats: int) -> tuple[float, int]:
    ev = split.test
    pairs = len(ev.interactions) if hasattr(ev, "interactions") else int(ev.mask.numel())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ev.evaluate(model)
        times.append(time.perf_counter() - t0)
    return pairs / statistics.median(times), pairs


def douban(args: argparse.Namespace, device: torch.device) -> None:
    t0 = time.perf_counter()
    data = read_douban(args.data)
    print(f"read Douban: {sum(len(d.interactions) for d in data.domains.values()):,} ratings in "
          f"{time.perf_counter() - t0:.2f}s; torch threads {torch.get_num_threads()}, "
          f"device {device}")
    for implicit in (False, True):
        split = ColdStartUsers("book", "music", implicit=implicit).split(data, 0)
        kind = "BCE, 4 neg, sampling incl." if implicit else "squared loss"
        rows = len(split.train.data["book"].interactions)
        for sparse in (False, True):
            rate = epoch_rate(split.train, "book", args.epochs, device, sparse, args.batch_size)
            print(f"MF epoch, {kind:28s} {'sparse' if sparse else 'dense':6s}: {rate:12,.0f} "
                  f"interactions/s (book domain, {rows:,} rows, batch {args.batch_size})")
        model = build_model("TGT", epochs=1, holdout=0.0).fit(
            split.train, None, FitContext(device=device, progress=False))
        rate, pairs = time_eval(split, model, repeats=5)
        metrics = "AUC + NDCG@10" if implicit else "MAE + RMSE"
        print(f"evaluation, {metrics:27s}: {rate:12,.0f} scored pairs/s ({pairs:,} pairs)")
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")


def one_size(n_ratings: int, args: argparse.Namespace, device: torch.device) -> dict:
    """One synthetic size, in this process: figures as a JSON line for the parent."""
    from cdrec.data.synthetic import skewed_two_domain

    data: CrossDomainData = skewed_two_domain(n_ratings, seed=0)
    train = TrainView(data, "bench")
    out = {"ratings": sum(len(d.interactions) for d in data.domains.values()),
           "rows": len(data["a"].interactions), "users": data.n_users, "items": data["a"].n_items}
    for sparse in (False, True):
        if sparse or not args.sparse_only:
            out["sparse" if sparse else "dense"] = epoch_rate(train, "a", args.epochs, device,
                                                              sparse, args.batch_size)
    out["peak_mib"] = peak_rss_mib()
    return out


def synthetic(args: argparse.Namespace) -> None:
    print(f"synthetic skewed two-domain data (cdrec.data.synthetic), MF squared-loss epoch on "
          f"domain a, batch {args.batch_size}, median of {args.epochs} epochs, torch threads "
          f"{torch.get_num_threads()}")
    print("| ratings (both domains) | rows trained | users | items | dense rows/s | "
          "sparse rows/s | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for n in args.ratings:
        cmd = [sys.executable, __file__, "--one-size", str(int(n)), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--device", args.device]
        if args.sparse_only:
            cmd.append("--sparse-only")
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(line.strip().splitlines()[-1])
        results.append(r)
        dense = f"{r['dense']:,.0f}" if "dense" in r else "–"
        print(f"| {r['ratings']:,} | {r['rows']:,} | {r['users']:,} | {r['items']:,} | {dense} | "
              f"{r['sparse']:,.0f} | {r['peak_mib']:,.0f} MiB |", flush=True)
    if len(results) > 1:
        for kind in ("dense", "sparse"):
            if kind not in results[0]:
                continue
            x = [math.log(r["rows"]) for r in results]
            y = [math.log(r["rows"] / r[kind]) for r in results]  # log epoch seconds
            slope = (y[-1] - y[0]) / (x[-1] - x[0])
            print(f"{kind}: log-log slope of epoch time vs rows, {results[0]['rows']:,} -> "
                  f"{results[-1]['rows']:,}: {slope:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "douban"))
    parser.add_argument("--ratings", type=float, nargs="+", help="synthetic sizes instead")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=MFConfig().batch_size)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sparse-only", action="store_true", help="skip the dense optimiser")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args, device)))
    elif args.ratings:
        synthetic(args)
    else:
        douban(args, device)


if __name__ == "__main__":
    main()
