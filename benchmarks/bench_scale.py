"""End-to-end cold-start pipeline on the synthetic skewed data set at a given size, or on
Douban grown by drawing its users with replacement.

    python benchmarks/bench_scale.py --ratings 1e6 [--dense] [--models ItemMean TGT EMCDR ...]
    python benchmarks/bench_scale.py --douban ../shared/data/douban --resample 10

Generates ``cdrec.data.synthetic.skewed_two_domain`` (seeded), writes it as one Parquet file per
domain and reads it back through the ``table`` reader (as a user's own data would be), builds the
cold-start split (a -> b, beta 0.2, 10 % validation users) and fits each model once (seed 0;
transfer methods share their pretrained bases, as in ``cdrec run``), printing per model its
wall time, the time of each training stage and the test RMSE, then the
total wall time and the process's peak resident memory. The bases train with sparse row
gradients (the default); ``--dense`` gives them dense Adam (``base_config.sparse: false``).
``--douban DIR --resample K`` uses Douban Book -> Music with its users drawn K times over
(``cdrec.data.synthetic.resample_users``: every draw a new user with all the drawn user's
ratings) instead of the synthetic data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from cdrec.config import DataSpec, load_data
from cdrec.data.readers import read_douban
from cdrec.data.synthetic import resample_users, skewed_two_domain
from cdrec.models import build_model
from cdrec.models.bases import BaseCache
from cdrec.runtime import peak_rss_mib
from cdrec.scenarios import build_scenario
from cdrec.train import FitContext, resolve_device, seed_everything

DEFAULT_MODELS = ["ItemMean", "TGT", "EMCDR", "PTUPCDR", "TMCDR_MF"]
TRANSFER = {"EMCDR", "PTUPCDR", "TMCDR_MF"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=float, default=1e6)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--dense", action="store_true", help="dense Adam in the bases")
    parser.add_argument("--douban", help="Douban folder: grow it with --resample instead")
    parser.add_argument("--resample", type=float, default=10.0,
                        help="with --douban: how many times its users are drawn")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.douban:
            synthetic = resample_users(read_douban(args.douban), args.resample, seed=0)
        else:
            synthetic = skewed_two_domain(int(args.ratings), seed=0)
        files = {}
        for name, dom in synthetic.domains.items():
            inter = dom.interactions
            files[name] = f"{name}.parquet"
            pd.DataFrame({"user": inter.user.numpy(), "item": inter.item.numpy(),
                          "rating": inter.rating.numpy()}).to_parquet(Path(tmp) / files[name])
        generated = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_data(DataSpec(format="table", path=tmp, files=files))
        read = time.perf_counter() - t0
    total = sum(len(d.interactions) for d in data.domains.values())
    source, target = list(data.domains)
    print(f"{total:,} ratings, {data.n_users:,} users, "
          f"{data[source].n_items:,} / {data[target].n_items:,} items; "
          f"generated in {generated:.1f}s, Parquet read back in {read:.1f}s")
    t0 = time.perf_counter()
    split = build_scenario("coldstart", {"source": source, "target": target}).split(data, 0)
    print(f"split in {time.perf_counter() - t0:.1f}s: {split.info}")
    cache = BaseCache()
    print("| model | fit | stages (seconds) | test RMSE |")
    print("|---|---|---|---|")
    for name in args.models:
        params: dict[str, object] = {}
        if args.dense and name != "ItemMean":
            params = {"base_config": {"sparse": False}} if name in TRANSFER else {"sparse": False}
        seed_everything(0)
        # One BaseCache for the split, as the runner does: the transfer methods share their
        # pretrained bases (the first pays for them).
        context = FitContext(device=device, seed=0, progress=False, label=name, base_cache=cache)
        hits = cache.hits
        t0 = time.perf_counter()
        model = build_model(name, **params).fit(split.train, split.validation, context)
        reused = cache.hits > hits  # its bases came from the cache: their seconds were not spent
        fit = time.perf_counter() - t0
        per_stage: dict[str, float] = defaultdict(float)
        for record in context.history:
            per_stage[str(record["stage"])] += float(record["seconds"])
        epochs = {stage: sum(1 for r in context.history if r["stage"] == stage)
                  for stage in per_stage}
        stages = ", ".join(
            f"{stage} cached" if reused and stage.startswith("base_")
            else f"{stage} {seconds:.1f} ({epochs[stage]} ep)"
            for stage, seconds in per_stage.items()) or "–"
        rmse = split.test.evaluate(model)["RMSE"]
        print(f"| {name} | {fit:.1f}s | {stages} | {rmse:.4f} |", flush=True)
    print(f"total wall {time.perf_counter() - start:.1f}s; peak resident memory "
          f"{peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
