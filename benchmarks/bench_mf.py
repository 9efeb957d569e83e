"""Throughput and peak memory of MF training epochs and of cold-start evaluation.

    python benchmarks/bench_mf.py [--data ../shared/data/douban] [--epochs 3] [--device cpu]

Prints, for full Douban Book -> Music (cold-start split, beta = 0.2): interactions per second of
one explicit MF epoch (squared loss) and one implicit epoch (BPR, 4 sampled negatives, sampling
included), and scored pairs per second of the explicit (MAE/RMSE) and implicit (AUC/NDCG@10)
evaluations, then the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from cdrec.data.readers import read_douban
from cdrec.models import build_model
from cdrec.models.bases.mf import MFConfig
from cdrec.models.bases.pretrain import fit_base, new_base
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_epochs(split, implicit: bool, epochs: int, device: torch.device) -> list[float]:
    config = MFConfig(epochs=1, holdout=0.0)
    ctx = FitContext(device=device, progress=False)
    mf = new_base(split.train, "book", "MF", config, ctx)
    inter = split.train.data["book"].interactions
    n_items = split.train.data["book"].n_items
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fit_base(mf, inter, n_items, context=ctx, stage="bench")
        rates.append(len(inter) / (time.perf_counter() - t0))
    return rates


def time_eval(split, model, repeats: int) -> tuple[float, int]:
    ev = split.test
    pairs = len(ev.interactions) if hasattr(ev, "interactions") else int(ev.mask.numel())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ev.evaluate(model)
        times.append(time.perf_counter() - t0)
    return pairs / statistics.median(times), pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "douban"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = read_douban(args.data)
    print(f"read Douban: {sum(len(d.interactions) for d in data.domains.values()):,} ratings in "
          f"{time.perf_counter() - t0:.2f}s; torch threads {torch.get_num_threads()}, "
          f"device {device}")
    for implicit in (False, True):
        split = ColdStartUsers("book", "music", implicit=implicit).split(data, 0)
        rates = time_epochs(split, implicit, args.epochs, device)
        kind = "BCE, 4 neg, sampling incl." if implicit else "squared loss"
        print(f"MF epoch, {kind:28s}: {statistics.median(rates):12,.0f} interactions/s "
              f"(median of {len(rates)}; book domain, {len(split.train.data['book'].interactions):,}"
              f" rows, batch {MFConfig().batch_size})")
        model = build_model("TGT", epochs=1, holdout=0.0).fit(
            split.train, None, FitContext(device=device, progress=False))
        rate, pairs = time_eval(split, model, repeats=5)
        metrics = "AUC + NDCG@10" if implicit else "MAE + RMSE"
        print(f"evaluation, {metrics:27s}: {rate:12,.0f} scored pairs/s ({pairs:,} pairs)")
    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
