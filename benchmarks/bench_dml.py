"""DML training time against the number of training records, on Douban Book + Music resampled.

    python benchmarks/bench_dml.py                           # 1e3 1e4 1e5 1e6 records, 2 rounds
    python benchmarks/bench_dml.py --records 1000 10000 --rounds 1 [--features ids]
    python benchmarks/bench_dml.py --data ../shared/data/douban --plot out/bench_dml.png

For each size N: N training records drawn from the Douban Book and Music ratings
(``read_douban``), each domain keeping its share of the ratings (Book 96,041 : Music 69,709).
A domain that needs fewer rows than it has gets a random subset of them (no repeats); one that
needs more (Douban has 165,750 ratings, so from about 1.7e5 on) gets every rating
``floor(n_d / rows)`` times plus a random subset for the remainder: sampling with replacement,
stratified so every rating appears as evenly as possible. Repeated (user, item) rows are kept
as repeated records (the data layer accepts them: the k-fold split keeps the rows of a pair
together, the interaction autoencoder averages them), so the dual loop trains on all N rows.
User ids stay shared between the domains, so a user drawn in both is an overlap user; users
and items are then re-indexed to those drawn (a sample of 1,000 records has only the users and
items of those records; from about 1.7e5 on every Douban user and item is in).

Each size runs in its own process (so peak memory is per size; Douban is read there, outside
the timing): ``build_model("DML", epochs=R, tolerance=0, ...)`` fitted on a ``kfold_rating``
train view of all N records without validation, so every one of the ``--rounds`` dual-loop
rounds (in-domain, mapping, cross) runs and nothing stops early. The columns: seconds of the
whole ``fit``; of the representation stage (the autoencoders' training epochs; 0 with
``--features ids``); of the dual loop; the rest (building the feature vectors, encoding,
setting up; the process's first Adam, which imports ``torch._dynamo``, is made before the
clock starts); records per second of the whole fit, and dual-loop records per second per round;
the peak resident memory of the size's process (and the peak CUDA memory on a GPU). Then the
least-squares slope of log(seconds) against log(records) (``numpy.polyfit``; 1.0 is linear
growth, as DML's paper claims) for the whole fit and for its two stages, and a log-log plot
(``--plot``) of the points with the fitted lines. The representation stage's cost grows with
the number of users and items (and their feature vectors' width), not with the records, so
it levels off once every Douban user and item is drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.readers import read_douban
from cdrec.models import build_model
from cdrec.runtime import peak_rss_mib
from cdrec.split import TrainView
from cdrec.train import FitContext, resolve_device, seed_everything

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("book", "music")


def draw_rows(n_rows: int, wanted: int, gen: torch.Generator) -> torch.Tensor:
    """``wanted`` row indices out of ``n_rows``: a random subset when there are enough rows,
    else every row ``wanted // n_rows`` times and a random subset for the remainder."""
    repeats, rest = divmod(wanted, n_rows)
    parts = [torch.arange(n_rows).repeat(repeats), torch.randperm(n_rows, generator=gen)[:rest]]
    return torch.cat(parts)


def sample_records(data: CrossDomainData, n_records: int, seed: int) -> CrossDomainData:
    """``n_records`` rows over the domains of ``data`` in their original proportion (see the
    module docstring), users and items re-indexed to those drawn (user ids shared)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {name: len(dom.interactions) for name, dom in data.domains.items()}
    total = sum(sizes.values())
    names = list(sizes)
    wanted = {name: round(n_records * sizes[name] / total) for name in names[:-1]}
    wanted[names[-1]] = n_records - sum(wanted.values())  # the sizes add up to n_records
    picked = {name: data[name].interactions.select(draw_rows(sizes[name], wanted[name], gen))
              for name in names}
    users, user_index = torch.unique(torch.cat([p.user for p in picked.values()]),
                                     return_inverse=True)
    domains, start = {}, 0
    for name in names:
        inter, dom = picked[name], data[name]
        items, item_index = torch.unique(inter.item, return_inverse=True)
        rows = Interactions(user_index[start:start + len(inter)], item_index, inter.rating,
                            inter.timestamp)
        start += len(inter)
        domains[name] = Domain(name, np.asarray(dom.item_ids)[items.numpy()], rows,
                               rating_scale=dom.rating_scale)
    return CrossDomainData(np.asarray(data.user_ids)[users.numpy()], domains,
                           name=f"{data.name}_{n_records}", provenance=data.provenance)


def warm_up(device: torch.device) -> None:
    """One Adam step on a throwaway parameter: the first ``torch.optim.Adam`` of a process
    imports ``torch._dynamo`` (about 3 s here), a one-off cost outside DML's training."""
    weight = torch.nn.Parameter(torch.zeros(4, device=device))
    optimiser = torch.optim.Adam([weight])
    weight.sum().backward()
    optimiser.step()


def one_size(n_records: int, args: argparse.Namespace) -> dict:
    """One size, in this process: its figures as a dict (a JSON line for the parent)."""
    device = resolve_device(args.device)
    data = sample_records(read_douban(args.data, DOMAINS), n_records, args.seed)
    train = TrainView(data, "kfold_rating")
    params: dict[str, object] = {"epochs": args.rounds, "tolerance": 0.0,
                                 "patience": args.rounds + 1, "features": args.features}
    if args.batch_size is not None:
        params["batch_size"] = args.batch_size
    if args.ae_epochs is not None:
        params["autoencoder"] = {"epochs": args.ae_epochs}
    seed_everything(args.seed)
    model = build_model("DML", **params)
    context = FitContext(device=device, seed=args.seed, progress=False, label="DML")
    warm_up(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    model.fit(train, None, context)
    fit = time.perf_counter() - t0
    ae = sum(float(h["seconds"]) for h in context.history
             if str(h["stage"]).startswith("autoencoder_"))
    loop = sum(float(h["seconds"]) for h in context.history if "@" in str(h["stage"]))
    rounds_run = len({str(h["stage"]).split("@")[1] for h in context.history
                      if "@" in str(h["stage"])})
    out = {"records": sum(len(d.interactions) for d in data.domains.values()),
           **{f"{d}_records": len(data[d].interactions) for d in DOMAINS},
           "users": data.n_users, "overlap": int(data.overlap_users(*DOMAINS).numel()),
           "items": sum(data[d].n_items for d in DOMAINS),
           "distinct_pairs": sum(int(torch.unique(data[d].interactions.user * data[d].n_items
                                                  + data[d].interactions.item).numel())
                                 for d in DOMAINS),
           "fit_s": fit, "repr_s": ae, "loop_s": loop, "other_s": fit - ae - loop,
           "rounds": rounds_run, "peak_mib": peak_rss_mib()}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def slope(records: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(records)."""
    return float(np.polyfit(np.log(records), np.log(seconds), 1)[0])


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    x = np.array([r["records"] for r in results], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("fit_s", "whole fit", "o"), ("loop_s", "dual loop", "s"),
                               ("repr_s", "representation", "^")):
        y = np.array([r[key] for r in results], dtype=float)
        if not (y > 0).all():  # --features ids: no representation stage
            continue
        if len(x) < 2:
            ax.loglog(x, y, marker, label=label)
            continue
        b, a = np.polyfit(np.log(x), np.log(y), 1)
        grid = np.geomspace(x.min(), x.max(), 50)
        line = ax.loglog(grid, np.exp(a) * grid ** b, "-",
                         label=f"{label}: least squares, slope {b:.2f}")[0]
        ax.loglog(x, y, marker, color=line.get_color())
    ax.set_xlabel("training records")
    ax.set_ylabel("seconds")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "douban"))
    parser.add_argument("--records", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6])
    parser.add_argument("--rounds", type=int, default=2, help="dual-loop rounds, all run")
    parser.add_argument("--features", default="auto",
                        choices=["auto", "interactions", "ids"],
                        help="auto: interaction autoencoders on Douban (no feature tables)")
    parser.add_argument("--ae-epochs", type=int, help="autoencoder epochs (DML's default: 20)")
    parser.add_argument("--batch-size", type=int, help="dual-loop batch size (default: 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", type=Path, default=Path("bench_dml.png"),
                        help="log-log plot of seconds against records")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    resolve_device(args.device)
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args)))
        return
    print(f"DML on Douban Book + Music resampled ({args.data}), {args.rounds} dual-loop "
          f"round(s), features {args.features}, seed {args.seed}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}; one process per size")
    print("| records | book / music | distinct pairs | users (overlap) | items | fit s | "
          "repr s | dual loop s | other s | records/s | loop records/s/round | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for n in args.records:
        cmd = [sys.executable, __file__, "--one-size", str(int(n)), "--data", args.data,
               "--rounds", str(args.rounds), "--features", args.features,
               "--seed", str(args.seed), "--device", args.device]
        for flag, value in (("--ae-epochs", args.ae_epochs), ("--batch-size", args.batch_size)):
            if value is not None:
                cmd += [flag, str(value)]
        line = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        r = json.loads(line.strip().splitlines()[-1])
        results.append(r)
        cuda = f" (CUDA {r['cuda_peak_mib']:,.0f} MiB)" if "cuda_peak_mib" in r else ""
        print(f"| {r['records']:,} | {r['book_records']:,} / {r['music_records']:,} | "
              f"{r['distinct_pairs']:,} | {r['users']:,} ({r['overlap']:,}) | {r['items']:,} | "
              f"{r['fit_s']:.1f} | {r['repr_s']:.1f} | {r['loop_s']:.1f} | {r['other_s']:.1f} | "
              f"{r['records'] / r['fit_s']:,.0f} | "
              f"{r['records'] * r['rounds'] / r['loop_s']:,.0f} | "
              f"{r['peak_mib']:,.0f} MiB{cuda} |", flush=True)
    if len(results) > 1:
        x = [float(r["records"]) for r in results]
        span = f"{results[0]['records']:,} -> {results[-1]['records']:,} records"
        for key, label in (("fit_s", "whole fit"), ("loop_s", "dual loop"),
                           ("repr_s", "representation")):
            y = [float(r[key]) for r in results]
            if all(v > 0 and math.isfinite(v) for v in y):
                print(f"{label}: least-squares log-log slope of seconds vs records, {span}: "
                      f"{slope(x, y):.2f}")
    if results:
        plot(results, args.plot, f"DML, Douban resampled, {args.rounds} round(s), "
                                 f"features {args.features}")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
