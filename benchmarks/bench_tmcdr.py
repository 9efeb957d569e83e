"""Meta-stage throughput of TMCDR: MAML tasks per second, batched over tasks with torch.func.

    python benchmarks/bench_tmcdr.py [--data ../shared/data/douban] [--base MF] [--implicit]

Full Douban Book -> Music cold-start split (beta = 0.2). The bases are pretrained briefly (their
quality does not change the meta stage's cost), then the meta stage runs a few epochs; the
script prints tasks/s for second-order and first-order MAML, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
from pathlib import Path

from cdrec.data.readers import read_douban
from cdrec.models import build_model
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "douban"))
    parser.add_argument("--base", default="MF")
    parser.add_argument("--implicit", action="store_true")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--tasks-per-batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    split = ColdStartUsers("book", "music", implicit=args.implicit).split(
        read_douban(args.data), 0)
    n_tasks = split.info["train_overlap_users"] // args.group_size
    print(f"{split.info['train_overlap_users']} overlap training users -> {n_tasks} tasks per "
          f"epoch (groups of {args.group_size}), {args.tasks_per_batch} tasks per meta-batch, "
          f"base {args.base}, {'implicit' if args.implicit else 'explicit'}")
    for first_order in (False, True):
        ctx = FitContext(device=device, progress=False)
        # patience > epochs: every epoch runs, so the timing covers a fixed amount of work
        build_model(f"TMCDR_{args.base}", base_config={"epochs": 2}, epochs=args.epochs,
                    patience=args.epochs + 1, group_size=args.group_size,
                    batch_size=args.tasks_per_batch, first_order=first_order).fit(
            split.train, split.validation, ctx)
        seconds = [h["seconds"] for h in ctx.history if h["stage"] == "meta"]
        rate = n_tasks / statistics.median(seconds)
        order = "first-order " if first_order else "second-order"
        print(f"meta stage, {order}: {rate:10,.0f} tasks/s (median of {len(seconds)} epochs, "
              f"validation excluded)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
