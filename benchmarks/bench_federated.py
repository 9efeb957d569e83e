"""Seconds per federated round and bytes per device per round, on Flower and vectorised.

    python benchmarks/bench_federated.py                          # full Douban, 64 and 256
    python benchmarks/bench_federated.py --devices 64 256 --rounds 6 --models FedMetaEM FedMF
    python benchmarks/bench_federated.py --secure                 # add FedMetaEM with SecAgg+

For each model and each number of devices per round: one Flower simulation (one ClientApp node
per Douban training user, Ray actors on 127.0.0.1) of ``--rounds`` pretrain rounds of the Book
domain (devices drawn at random each round), and the same rounds vectorised. Prints the steady-state seconds per round (the
first round, which starts the actors, apart), the bytes each device downloads and uploads per
round as measured on the Flower messages, their ratio to federated MF's, the analytic numbers
per device (n k_p + k_p k_c + k + |MLP_item| for MetaEM, n k + n + k + 1 for MF) and peak
memory of this process.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from cdrec.data.readers import read_douban
from cdrec.federated.devices import DeviceStore
from cdrec.federated.flower import FlowerTransport, VectorisedTransport, make_client_app, simulate
from cdrec.federated.secure import SecureSettings
from cdrec.models import build_model
from cdrec.models.bases.pretrain import new_base
from cdrec.models.coldstart.federated import FederatedRound
from cdrec.runtime import peak_rss_mib
from cdrec.scenarios.coldstart import ColdStartUsers
from cdrec.train import FitContext, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def analytic_numbers(base: torch.nn.Module, name: str) -> int:
    """Numbers one device downloads in a pretrain round, from the shapes."""
    n, width = base.item_factors.weight.shape
    if name.startswith("FedMetaEM"):
        mlp = sum(p.numel() for p in base.item_mlp.parameters())
        return n * width + width * base.config.k_c + base.config.dim + mlp
    return n * width + n + int(base.user_dim) + 1


def run_rounds(stage: object, transport: object, *, log: list[dict], per_round: int,
               n_rounds: int, generator: torch.Generator) -> None:
    """``n_rounds`` book pretrain rounds of ``per_round`` random devices, logged in ``log``."""
    step = FederatedRound(stage, transport, "book", log, "base_book")
    users = transport.users_with("book")  # type: ignore[attr-defined]
    for _ in range(n_rounds):
        order = torch.randperm(users.numel(), generator=generator)
        step([users[order[:per_round]]])


def on_grid(rounds: functools.partial, n_nodes: int, secure: SecureSettings | None,
            grid: object) -> None:
    rounds(FlowerTransport(grid, n_nodes, secure=secure))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--douban", type=Path, default=ROOT.parent / "shared" / "data" / "douban")
    parser.add_argument("--models", nargs="+", default=["FedMetaEM", "FedMF"])
    parser.add_argument("--devices", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--secure", action="store_true", help="also FedMetaEM with SecAgg+")
    args = parser.parse_args()

    data = read_douban(args.douban, ("book", "music"))
    split = ColdStartUsers(source="book", target="music").split(data, 0)
    print(f"Douban: {data.n_users} users, book items {data['book'].n_items}; "
          f"{torch.get_num_threads()} threads")
    runs = [(m, {}) for m in args.models]
    if args.secure:
        runs.append(("FedMetaEM", {"secure_aggregation": True}))
    store = DeviceStore.from_view(split.train)
    rows = []
    for name, extra in runs:
        label = name + ("+SecAgg" if extra else "")
        for per_round in args.devices:
            for engine in ("flower", "vectorised"):
                if engine == "vectorised" and extra:
                    continue
                seed_everything(0)
                model = build_model(name, engine=engine, **extra)
                context = FitContext(seed=0, progress=False)
                base = new_base(split.train, "book", model.config.base,
                                model.config.base_settings(), context)
                stage = model._pretrain_stage(base)
                log: list[dict] = []
                rounds = functools.partial(run_rounds, stage, log=log, per_round=per_round,
                                           n_rounds=args.rounds, generator=context.generator)
                t0 = time.perf_counter()
                if engine == "vectorised":
                    rounds(VectorisedTransport(store))
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        path = str(store.save(Path(tmp) / "devices.pt"))
                        secure = SecureSettings() if extra else None
                        simulate(functools.partial(on_grid, rounds, len(store), secure),
                                 make_client_app(path), len(store))
                total = time.perf_counter() - t0
                book = pd.DataFrame(log)
                steady = book["seconds"].iloc[1:] if len(book) > 1 else book["seconds"]
                rows.append({
                    "model": label, "engine": engine, "devices/round": per_round,
                    "rounds": len(book), "s/round": steady.mean(),
                    "first round s": book["seconds"].iloc[0],
                    "ms/device": 1000 * steady.mean() / per_round,
                    "down kB/device": book["bytes_down_per_device"].mean() / 1e3,
                    "up kB/device": book["bytes_up_per_device"].mean() / 1e3,
                    "analytic kB (float32)": 4 * analytic_numbers(base, name) / 1e3,
                    "total s": total, "peak MiB": peak_rss_mib()})
                print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3g"),
                      flush=True)
    table = pd.DataFrame(rows)
    mf = table[(table["model"] == "FedMF") & (table["engine"] == "flower")]
    if not mf.empty:
        by_devices = mf.set_index("devices/round")["down kB/device"]
        table["down / FedMF"] = table["down kB/device"] / table["devices/round"].map(by_devices)
    print()
    print(table.to_string(index=False, float_format="%.3g"))


if __name__ == "__main__":
    main()
