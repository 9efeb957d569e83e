"""UCLR: users per second of the sampled-negative evaluation of one 10k-user domain, seconds per
epoch of each training stage, and peak memory.

    python benchmarks/bench_uclr.py                            # Amazon Sport-Cloth, 2 epochs/stage
    python benchmarks/bench_uclr.py --data sample --epochs 1   # the shipped Phone-Electronic pair
    python benchmarks/bench_uclr.py --model PGE+UCL-AE --users 20000 --out runs/uclr.json

Data: ``--data full`` is the Amazon Sport-Cloth pair (``read_amazon_implicit_pair(--data-dir,
"sport", "cloth")``, 9,928 users), ``--data sample`` the shipped ``amazon_implicit`` sample
(Phone-Electronic, 3,325 users). Three parts, each in its own process so that each peak
resident memory (``ru_maxrss``, the process's high-water mark) is that part's own:

1. Stages. The multi-target leave-one-out split of the real data (``LeaveOneOut``, seed
   ``--seed``, no validation holdout), and ``--model`` (UCLR or one of its ablations) fitted
   without validation with ``--epochs`` epochs in every stage, so every epoch runs. For each
   stage of the fit's per-epoch history (``FitContext.history``: ``pge``, ``autoencoder``,
   ``finetune_<domain>``): the median seconds of its epochs (the ``seconds`` the training loop
   records: batches, loss, steps, and the epoch's negative sampling and masks) and the rows per
   second: positives of every domain for ``pge`` (one sampled negative each), users with an
   interaction for ``autoencoder``, the domain's positives for ``finetune_<domain>``. Then the
   whole fit's wall time (``import torch._dynamo``, which the process's first Adam would do,
   about 1.5 s, comes before the clock) and the peak RSS before the fit (data, split) and after.
2. Evaluation model. The evaluated domain (``--domain``, default the pair's first: sport or
   phone) with ``--users`` users: the given leave-one-out test rows are folded back into the
   interactions; the users with two or more distinct items in the domain (the only ones
   leave-one-out can hold a row out of) are kept; if there are ``--users`` or more, a random
   ``--users`` of them (no repeats), else they are drawn with replacement
   (``cdrec.data.synthetic.resample_users``: every draw a new user with all the drawn user's
   rows in both domains). ``LeaveOneOut(domains=[domain], n_neg=99)`` then holds out one
   positive of each of the ``--users`` users (at random: the data has no timestamps) against
   99 sampled negatives. The model is fitted on it with one epoch per stage (its quality does
   not change the evaluation's cost) and saved.
3. Evaluation. The same data and split, built again from the seed, the saved model loaded
   (``cdrec.models.persist.load_model``), and ``split.test.evaluate(model)`` (a
   ``SampledRankingEvaluator``: 100 scored pairs per user) timed ``--repeats`` times: users per
   second of the median; the peak RSS before the evaluations (data, split, model) and after.

Prints a table per part and writes every figure to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cdrec.data.catalog import load_sample
from cdrec.data.dataset import CrossDomainData, Interactions
from cdrec.data.readers import read_amazon_implicit_pair
from cdrec.data.synthetic import resample_users
from cdrec.evaluation import SampledRankingEvaluator
from cdrec.models import build_model
from cdrec.models.persist import load_model
from cdrec.models.recommender import Recommender
from cdrec.runtime import peak_rss_mib
from cdrec.scenarios.leave_one_out import LeaveOneOut, distinct_items_per_user
from cdrec.split import Split
from cdrec.train import FitContext, resolve_device, seed_everything

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("UCLR", "PGE+UCL-AE", "PGE+CL-AE", "PGE+AE", "PGE")
N_NEG = 99


def read_data(args: argparse.Namespace) -> CrossDomainData:
    if args.data == "sample":
        return load_sample("amazon_implicit")
    return read_amazon_implicit_pair(args.data_dir, "sport", "cloth")


def eval_domain(data: CrossDomainData, args: argparse.Namespace) -> str:
    return args.domain or next(iter(data.domains))


def keep_users(data: CrossDomainData, keep: torch.Tensor) -> CrossDomainData:
    """The users ``keep`` (sorted, distinct) re-indexed 0..len-1 with all their rows; every
    domain's given test rows folded into its interactions."""
    new_index = torch.full((data.n_users,), -1, dtype=torch.long)
    new_index[keep] = torch.arange(keep.numel())
    domains = {}
    for name, dom in data.domains.items():
        rows = dom.interactions if dom.given_test is None else dom.interactions.concat(
            dom.given_test)
        rows = rows.select(new_index[rows.user] >= 0)
        domains[name] = dom.with_interactions(Interactions(
            new_index[rows.user], rows.item, rows.rating, rows.timestamp))
    return CrossDomainData(np.asarray(data.user_ids)[keep.numpy()], domains,
                           name=f"{data.name}_{keep.numel()}", provenance=data.provenance)


def evaluation_data(args: argparse.Namespace) -> tuple[CrossDomainData, dict]:
    """The data of parts 2 and 3 (module docstring) and how it was made."""
    data = read_data(args)
    domain = eval_domain(data, args)
    dom = data[domain]
    rows = dom.interactions if dom.given_test is None else dom.interactions.concat(
        dom.given_test)
    eligible = (distinct_items_per_user(rows, dom.n_items, data.n_users) >= 2).nonzero()
    eligible = eligible.squeeze(1)
    gen = torch.Generator().manual_seed(args.seed)
    how = {"domain": domain, "real_users": data.n_users, "eligible_users": eligible.numel()}
    if eligible.numel() >= args.users:
        picked = eligible[torch.randperm(eligible.numel(), generator=gen)[:args.users]]
        out = keep_users(data, torch.sort(picked).values)
        how["resampled"] = False
    else:
        base = keep_users(data, eligible)
        out = resample_users(base, args.users / base.n_users, seed=args.seed)
        how["resampled"] = True
    if out.n_users != args.users:
        raise RuntimeError(f"built {out.n_users} users, not {args.users}")
    return out, how


def evaluation_split(args: argparse.Namespace) -> tuple[Split, dict]:
    data, how = evaluation_data(args)
    split = LeaveOneOut(domains=[how["domain"]], n_neg=N_NEG, validation=False).split(
        data, args.seed)
    return split, how


def new_model(args: argparse.Namespace, epochs: int) -> Recommender:
    seed_everything(args.seed)
    stage = {"epochs": epochs, "patience": epochs + 1}
    return build_model(args.model, pge=stage, autoencoder=stage, finetune=stage)


def cuda_peak(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20}


def part_stages(args: argparse.Namespace, device: torch.device) -> dict:
    """Part 1: per-stage epoch times of a fit on the real data."""
    importlib.import_module("torch._dynamo")  # the first Adam's import (1.5 s): off the clock
    data = read_data(args)
    split = LeaveOneOut(n_neg=N_NEG, validation=False).split(data, args.seed)
    train = split.train.data
    rows = {name: len(train[name].interactions) for name in train.domains}
    active = torch.unique(torch.cat([train[n].interactions.user for n in train.domains]))
    model = new_model(args, args.epochs)
    context = FitContext(device=device, seed=args.seed, progress=False, label=args.model)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    model.fit(split.train, None, context)
    fit_s = time.perf_counter() - t0
    stages: dict[str, dict] = {}
    for h in context.history:
        stage = str(h["stage"])
        stages.setdefault(stage, {"seconds": []})["seconds"].append(float(h["seconds"]))
    for stage, s in stages.items():
        if stage == "pge":
            s["rows"], s["unit"] = sum(rows.values()), "positives"
        elif stage == "autoencoder":
            s["rows"], s["unit"] = int(active.numel()), "users"
        else:
            s["rows"], s["unit"] = rows[stage.removeprefix("finetune_")], "positives"
        s["median_s"] = statistics.median(s["seconds"])
        s["rows_per_s"] = s["rows"] / s["median_s"]
    return {"data": data.name, "users": data.n_users, "train_rows": rows,
            "items": {name: train[name].n_items for name in train.domains},
            "fit_s": fit_s, "epochs_s": sum(sum(s["seconds"]) for s in stages.values()),
            "stages": stages, "peak_before_fit_mib": before, "peak_mib": peak_rss_mib(),
            **cuda_peak(device)}


def part_eval_fit(args: argparse.Namespace, device: torch.device) -> dict:
    """Part 2: the 1-epoch-per-stage model of the evaluation, saved to ``--model-file``."""
    split, how = evaluation_split(args)
    model = new_model(args, 1)
    t0 = time.perf_counter()
    model.fit(split.train, None, FitContext(device=device, seed=args.seed, progress=False))
    fit_s = time.perf_counter() - t0
    model.save(args.model_file)
    return {**how, "fit_s": fit_s, "peak_mib": peak_rss_mib(), **cuda_peak(device)}


def part_eval(args: argparse.Namespace, device: torch.device) -> dict:
    """Part 3: users per second of ``split.test.evaluate`` with the saved model."""
    split, how = evaluation_split(args)
    model = load_model(args.model_file, device=device)
    evaluator = split.test  # one evaluated domain: its own evaluator
    assert isinstance(evaluator, SampledRankingEvaluator)
    n_users = evaluator.users.numel()
    before = peak_rss_mib()
    times, metrics = [], {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        metrics = evaluator.evaluate(model)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {**how, "test_users": n_users, "n_neg": N_NEG, "seconds": times, "median_s": median,
            "users_per_s": n_users / median, "metrics": metrics,
            "peak_before_eval_mib": before, "peak_mib": peak_rss_mib(), **cuda_peak(device)}


PARTS = {"stages": part_stages, "eval-fit": part_eval_fit, "eval": part_eval}


def run_part(part: str, args: argparse.Namespace, model_file: Path) -> dict:
    """One part in its own process: its figures, the JSON line it prints last."""
    cmd = [sys.executable, __file__, "--part", part, "--model-file", str(model_file),
           "--data", args.data, "--data-dir", str(args.data_dir), "--model", args.model,
           "--epochs", str(args.epochs), "--users", str(args.users),
           "--repeats", str(args.repeats), "--seed", str(args.seed), "--device", args.device]
    if args.domain:
        cmd += ["--domain", args.domain]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mib(r: dict, key: str = "peak_mib") -> str:
    cuda = f" (CUDA {r['cuda_peak_mib']:,.0f} MiB)" if "cuda_peak_mib" in r else ""
    return f"{r[key]:,.0f} MiB{cuda}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["sample", "full"], default="full",
                        help="sample: shipped Phone-Electronic; full: Sport-Cloth (--data-dir)")
    parser.add_argument("--data-dir", type=Path,
                        default=ROOT.parent / "shared" / "data" / "amazon_implicit")
    parser.add_argument("--model", choices=MODELS, default="UCLR")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every stage (part 1)")
    parser.add_argument("--users", type=int, default=10_000, help="users of the evaluated domain")
    parser.add_argument("--domain", help="evaluated domain (default: the pair's first)")
    parser.add_argument("--repeats", type=int, default=3, help="timed evaluations (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench_uclr.json")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--model-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.epochs < 1 or args.users < 1 or args.repeats < 1:
        parser.error("--epochs, --users and --repeats must be >= 1")
    if args.part:
        print(json.dumps(PARTS[args.part](args, device)))
        return

    print(f"{args.model}, data {args.data}, {args.epochs} epoch(s) per stage, seed {args.seed}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}; one process per part")
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.pt"
        stages = run_part("stages", args, model_file)
        print(f"\n1. Training stages: {stages['data']}, {stages['users']:,} users, train rows "
              + ", ".join(f"{n} {r:,} ({stages['items'][n]:,} items)"
                          for n, r in stages["train_rows"].items())
              + " (each user's given test row held out), no validation")
        print("| stage | epochs | s/epoch (median) | rows/epoch | rows/s |")
        print("|---|---|---|---|---|")
        for stage, s in stages["stages"].items():
            print(f"| {stage} | {len(s['seconds'])} | {s['median_s']:.2f} | "
                  f"{s['rows']:,} {s['unit']} | {s['rows_per_s']:,.0f} |")
        print(f"whole fit {stages['fit_s']:.1f} s ({stages['epochs_s']:.1f} s in the epochs above); "
              f"peak RSS {mib(stages, 'peak_before_fit_mib')} before the fit (data, split), "
              f"{mib(stages)} after")
        fit = run_part("eval-fit", args, model_file)
        ev = run_part("eval", args, model_file)
    how = (f"{ev['eligible_users']:,} of the {ev['real_users']:,} real users have 2+ distinct "
           f"{ev['domain']} items; "
           + (f"RESAMPLED with replacement to {args.users:,} users (resample_users)"
              if ev["resampled"] else f"{args.users:,} of them drawn without replacement"))
    print(f"\n2. Sampled-negative evaluation, domain {ev['domain']}: {how}; one held-out "
          f"positive + {ev['n_neg']} negatives per user; model fitted with 1 epoch per stage "
          f"in {fit['fit_s']:.1f} s (peak RSS {mib(fit)})")
    print("| domain | users | s per evaluation (median of "
          f"{args.repeats}) | users/s | {next(iter(ev['metrics']), 'metric')} | "
          "peak RSS before | peak RSS after |")
    print("|---|---|---|---|---|---|---|")
    main_metric = next(iter(ev["metrics"].values()), float("nan"))
    print(f"| {ev['domain']} | {ev['test_users']:,} | {ev['median_s']:.3f} | "
          f"{ev['users_per_s']:,.0f} | {main_metric:.4f} | {mib(ev, 'peak_before_eval_mib')} | "
          f"{mib(ev)} |")
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k not in ("part", "model_file")},
              "torch_threads": torch.get_num_threads(), "stages": stages,
              "eval_fit": fit, "eval": ev}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfigures: {args.out}")


if __name__ == "__main__":
    main()
