"""Users per second of batch top-k recommendation, known users and new users from a history.

    python benchmarks/bench_recommend.py                       # full Douban, EMCDR, 10k users
    python benchmarks/bench_recommend.py --model-file runs/x/models/EMCDR_seed0.pt
    python benchmarks/bench_recommend.py --models EMCDR PTUPCDR TMCDR --users 10000 -k 10

Fits each model on full Douban Book -> Music (cold-start split, seed 0; or loads a saved one),
then times ``recommend("music", ids, k)`` for ``--users`` requests drawn with replacement from
the data's users (Douban has fewer users than that: repeats are scored again, as a batch of
requests would be), and ``recommend_from_history`` for ``--new-users`` new users whose book
histories are copies of real users' (each relabelled, so every one is folded in). Prints users
per second and peak memory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cdrec.data.readers import read_douban
from cdrec.models import build_model
from cdrec.models.persist import load_model
from cdrec.models.recommender import Recommender
from cdrec.runtime import peak_rss_mib
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--douban", type=Path, default=ROOT.parent / "shared" / "data" / "douban")
    parser.add_argument("--models", nargs="+", default=["EMCDR"])
    parser.add_argument("--model-file", type=Path, help="a saved model instead of fitting")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--new-users", type=int, default=1_000)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    data = read_douban(args.douban, ("book", "music"))
    split = ColdStartUsers(source="book", target="music").split(data, 0)
    book = split.train.data["book"].interactions
    print(f"Douban: {data.n_users} users, music items {data['music'].n_items}; "
          f"{torch.get_num_threads()} threads")
    rng = np.random.default_rng(0)
    models: list[tuple[str, Recommender]] = []
    if args.model_file:
        models.append((args.model_file.name, load_model(args.model_file)))
    else:
        for name in args.models:
            seed_everything(0)
            t0 = time.perf_counter()
            model = build_model(name).fit(split.train, split.validation,
                                          FitContext(seed=0, progress=False))
            print(f"{name}: fitted in {time.perf_counter() - t0:.1f} s")
            models.append((name, model))
    for name, model in models:
        ids = data.user_ids[rng.integers(0, data.n_users, args.users)]
        t0 = time.perf_counter()
        lists = model.recommend("music", ids, args.k)
        seconds = time.perf_counter() - t0
        print(f"{name}: recommend {args.users} known users, top {args.k}: {seconds:.2f} s, "
              f"{args.users / seconds:,.0f} users/s ({len(lists)} rows)")
        with_books = torch.unique(book.user).numpy()
        copies = rng.choice(with_books, args.new_users)
        # Each new user copies a real user's book history under a new label.
        per_user = pd.DataFrame({"row": book.user.numpy(), "item": book.item.numpy(),
                                 "rating": book.rating.numpy()})
        rows = pd.DataFrame({"row": copies, "user": np.arange(args.new_users)}).merge(per_user)
        history = pd.DataFrame({"user": rows["user"],
                                "item": data["book"].item_ids[rows["item"].to_numpy()],
                                "rating": rows["rating"]})
        t0 = time.perf_counter()
        new_lists = model.recommend_from_history(history, args.k)
        seconds = time.perf_counter() - t0
        print(f"{name}: recommend_from_history {args.new_users} new users "
              f"({len(history)} book ratings), top {args.k}: {seconds:.2f} s, "
              f"{args.new_users / seconds:,.0f} users/s ({len(new_lists)} rows)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
