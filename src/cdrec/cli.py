"""The ``cdrec`` command: run experiments from configs, list datasets and models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    import pandas as pd

# What bad configs, paths and data raise: shown as one red line, exit code 2, no traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError)


def fail(err: BaseException | str) -> NoReturn:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2) from None


app = typer.Typer(help="Cross-domain recommendation: experiments from YAML configs.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML experiment config", exists=True,
                                           dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key.sub=value overrides, e.g. seeds=[0] scenario.params.test_fraction=0.5")] = None,
    resume: Annotated[bool, typer.Option(help="reuse finished (model, seed) results and "
                                              "resume training from checkpoints")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (overrides config)")]
    = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    nproc: Annotated[int, typer.Option(help=(
        "data-parallel processes on this machine (torchrun, gloo on 127.0.0.1); for several "
        "machines start `torchrun ... -m cdrec run` on each, see the README"))] = 1,
) -> None:
    """Train and evaluate every model of CONFIG for every seed; print the results table."""
    from cdrec import distributed
    from cdrec.config import load_sweep
    from cdrec.runner import run as run_config

    if nproc != 1:
        argv = ["run", str(config), *(overrides or [])]
        argv += ["--resume"] if resume else []
        argv += [f"--device={device}"] if device else []
        argv += ["--quiet"] if quiet else []
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        try:
            distributed.launch(nproc, argv)
        except ValueError as err:
            fail(err)
        except ChildFailedError as err:  # the failing process printed its own error above
            fail(f"{len(err.failures)} of {nproc} processes failed; the first: "
                 f"{err.get_first_failure()[1].message or 'see its output above'}")
        return

    extra = list(overrides or [])
    if device:
        extra.append(f"device={device}")
    if quiet:
        extra.append("progress=false")
    try:
        configs = load_sweep(config, extra)
        done = []
        for point, cfg in configs:
            if len(configs) > 1:
                typer.secho(f"== {cfg.name}", bold=True)
            out = run_config(cfg, resume=resume)
            done.append((point, out["results"]))
            if distributed.is_main():
                typer.echo(out["table"])
                typer.echo(f"written to {out['dir']}/")
        if len(configs) > 1 and distributed.is_main():
            _write_sweep(Path(configs[0][1].output_dir) / configs[0][1].name.split("/")[0],
                         done)
        distributed.shutdown()
    except USER_ERRORS as err:
        fail(err)


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="YAML experiment config with a tune: section",
                                           exists=True, dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides")]
    = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="model label(s) to tune (default: every label under tune:)")] = None,
    trials: Annotated[int, typer.Option(min=1, help="completed trials per model, counting "
                                                    "those already in the study")] = 20,
    seed: Annotated[list[int] | None, typer.Option(
        "--seed", help="split seeds averaged per trial (default: the config's first)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Search hyper-parameters on the validation users (Optuna TPE); print the best per model."""
    from cdrec.config import load_configs
    from cdrec.tune import override_line
    from cdrec.tune import tune as tune_model

    extra = list(overrides or []) + (["progress=false"] if quiet else [])
    try:
        for cfg in load_configs(config, extra):
            if not (model or cfg.tune):
                raise ValueError(f"{config} has no tune: section (see `cdrec tune --help` and "
                                 "the README) and no --model was given")
            for label in model or list(cfg.tune):
                typer.secho(f"== {cfg.name}: {label}", bold=True)
                best = tune_model(cfg, label, trials=trials, seeds=seed)
                typer.echo(f"best validation {best['metric']} = {best['value']:.4f} after "
                           f"{best['trials']} trials: {best['point']}")
                typer.echo(f"apply with: {override_line(label, best['point'])}")
                typer.echo(f"written to {best['dir']}/")
    except USER_ERRORS as err:
        fail(err)


def _read_table_file(path: Path, what: str) -> pd.DataFrame:
    """A CSV, Parquet or JSON file as a DataFrame (JSON: records, or one {item: rating})."""
    import json

    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".json":
        content = json.loads(path.read_text())
        if isinstance(content, dict):  # {item: rating}
            return pd.DataFrame({"item": list(content), "rating": list(content.values())})
        return pd.DataFrame(content)
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
    raise ValueError(f"{path}: {what} must be .csv, .tsv, .txt, .parquet or .json")


def _model_file(path: Path, label: str | None, seed: int | None) -> Path:
    """A model file, or the one of (label, seed) in a run directory's models/."""
    if path.is_file():
        return path
    models = path / "models"
    files = sorted(models.glob("*_seed*.pt")) if models.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{path} is neither a model file nor a run directory with "
                                "saved models (models/*.pt; runs with save_models: false have "
                                "none)")
    found: dict[str, dict[int, Path]] = {}
    for file in files:
        name, _, number = file.stem.rpartition("_seed")
        found.setdefault(name, {})[int(number)] = file
    from cdrec.filenames import safe_name

    if label is None:
        if len(found) > 1:
            raise ValueError(f"{path} holds several models: pass --model, one of "
                             f"{', '.join(found)}")
        label = next(iter(found))
    key = safe_name(label)
    if key not in found:
        raise ValueError(f"{path} has no saved model {label!r}; it has {', '.join(found)}")
    seeds = found[key]
    chosen = min(seeds) if seed is None else seed
    if chosen not in seeds:
        raise ValueError(f"{path}: {label} was saved for seeds {sorted(seeds)}, not {seed}")
    return seeds[chosen]


@app.command()
def recommend(
    path: Annotated[Path, typer.Argument(help="a model file (.pt) or a run directory",
                                         exists=True)],
    user: Annotated[list[str] | None, typer.Option(
        "--user", help="original user id(s) of the training data")] = None,
    users: Annotated[Path | None, typer.Option(
        help="a file of user ids (a 'user' column, or one column): top-k lists for all, "
             "written to --output", exists=True, dir_okay=False)] = None,
    history: Annotated[Path | None, typer.Option(
        help="a new user's source-domain history (CSV/JSON/Parquet: item[, rating][, user]): "
             "the cold-start case", exists=True, dir_okay=False)] = None,
    domain: Annotated[str | None, typer.Option(
        help="domain to recommend in (default: the model's target domain)")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="items per user")] = 10,
    keep_seen: Annotated[bool, typer.Option(
        help="keep items the user already has in the training data")] = False,
    model: Annotated[str | None, typer.Option(
        help="model label in a run directory (default: its only one)")] = None,
    seed: Annotated[int | None, typer.Option(
        help="which seed's model of a run directory (default: the first)")] = None,
    output: Annotated[Path | None, typer.Option(
        help="write the lists to this .csv or .parquet instead of printing them")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
) -> None:
    """Top-k items by original id for known users (--user, --users) or a new user's source
    history (--history), from a saved model or a run directory."""
    import time
    import warnings

    from cdrec.models.persist import load_model
    from cdrec.models.serving import UnknownIdsWarning
    from cdrec.train import resolve_device

    given = [name for name, value in (("--user", user), ("--users", users),
                                      ("--history", history)) if value]
    if len(given) != 1:
        fail("give exactly one of --user, --users and --history" +
             (f" (got {' and '.join(given)})" if given else ""))
    if users is not None and output is None:
        fail("--users writes its lists to a file: pass --output lists.parquet (or .csv)")
    if output is not None and output.suffix.lower() not in (".csv", ".parquet"):
        fail(f"--output must end in .csv or .parquet, not {output.name!r}")
    try:
        file = _model_file(path, model, seed)
        fitted = load_model(file, device=resolve_device(device))
        trained_on = fitted.trained_on_
        t0 = time.perf_counter()
        if history is not None:
            if domain is not None and domain != trained_on.target:
                raise ValueError(f"a new user's history is mapped into the model's target "
                                 f"domain {trained_on.target!r}, not {domain!r}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UnknownIdsWarning)
                lists = fitted.recommend_from_history(_read_table_file(history, "--history"),
                                                      k)
            for warning in caught:
                typer.secho(f"warning: {history}: {warning.message}", fg=typer.colors.YELLOW,
                            err=True)
        else:
            target = domain or trained_on.target
            if target is None:
                raise ValueError(f"pass --domain: the model serves {sorted(trained_on.item_ids)}")
            if users is not None:
                frame = _read_table_file(users, "--users")
                column = "user" if "user" in frame.columns else frame.columns[0]
                ids = frame[column].tolist()
            else:
                ids = user or []
            lists = fitted.recommend(target, ids, k, exclude_seen=not keep_seen)
        seconds = time.perf_counter() - t0
    except USER_ERRORS as err:
        fail(err.args[0] if isinstance(err, KeyError) and err.args else err)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix.lower() == ".parquet":
            lists.to_parquet(output, index=False)
        else:
            lists.to_csv(output, index=False)
        n = lists["user"].nunique()
        typer.echo(f"{n} users, top {k}, in {seconds:.2f} s ({n / max(seconds, 1e-9):,.0f} "
                   f"users/s): written {output}")
        return
    typer.echo(f"{fitted.registered_name} from {file}")
    typer.echo(lists.to_string(index=False))


@app.command()
def datasets(
    data_dir: Annotated[Path | None, typer.Option(help="also look for datasets here, e.g. "
                                                       "../shared/data")] = None,
) -> None:
    """List the shipped samples and any datasets found in DATA_DIR."""
    from cdrec.data.catalog import find_datasets, shipped_datasets

    def show(title: str, rows: list[dict]) -> None:
        typer.echo(title)
        if not rows:
            typer.echo("  (none)")
        for row in rows:
            detail = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("name",))
            typer.echo(f"  {row.get('name')}: {detail}")

    show("shipped with cdrec:", shipped_datasets())
    if data_dir is not None:
        if not data_dir.is_dir():
            fail(f"{data_dir} is not a directory")
        show(f"found in {data_dir}:", find_datasets(data_dir))


def _write_sweep(parent: Path, done: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """A sweep's summary: ``sweep.csv`` (every point, model and metric) and, when one swept key
    alone fixes a point (a one-key or a paired sweep), ``sweep.png`` of the test metrics against
    it, in the sweep's parent directory."""
    from cdrec.report import axis_key, evaluation_metrics, plot_sweep, sweep_keys, sweep_table

    table = sweep_table(done)
    parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(parent / "sweep.csv", index=False)
    typer.echo(f"sweep summary written to {parent / 'sweep.csv'}")
    key = axis_key(table)
    if key is not None:
        plot_sweep(table, key, evaluation_metrics(table), parent / "sweep.png",
                   title=parent.name)
        typer.echo(f"sweep figure written to {parent / 'sweep.png'}")
    else:
        keys = sweep_keys(table)
        typer.echo(f"a sweep over the product of {keys} has no figure: draw one with "
                   f"`cdrec plot-sweep {parent} --key KEY --where OTHER=VALUE`")


@app.command("plot-sweep")
def plot_sweep_command(
    sweep_dir: Annotated[Path, typer.Argument(help="a sweep's directory holding sweep.csv",
                                              exists=True, file_okay=False)],
    key: Annotated[str | None, typer.Option(help="the swept key on the x axis (default: the "
                                            "only one)")] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metric", help="metrics to plot "
                                                      "(default: the test metrics)")] = None,
    models: Annotated[list[str] | None, typer.Option("--model", help="models to draw "
                                                     "(default: all)")] = None,
    marks: Annotated[list[str] | None, typer.Option("--mark", help=(
        "VALUE=LABEL: a dashed line at a value of the key, e.g. 120='k(k-1)/2'"))] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help=(
        "KEY=VALUE: only the points where another swept key has this value (a sweep over "
        "several keys)"))] = None,
    out: Annotated[Path | None, typer.Option(help="PNG path (default: SWEEP_DIR/sweep_KEY"
                                             ".png)")] = None,
) -> None:
    """Test metrics against a swept setting, one line per model (DML Figs. 3-4)."""
    import pandas as pd

    from cdrec.report import SWEEP_COLUMNS, axis_key, evaluation_metrics, plot_sweep, sweep_keys

    csv = sweep_dir / "sweep.csv"
    if not csv.exists():
        fail(f"{sweep_dir} has no sweep.csv: `cdrec run` writes it after a config's sweep")
    table = pd.read_csv(csv)
    absent = sorted(SWEEP_COLUMNS - set(table.columns))
    if absent:
        fail(f"{csv} is not a sweep summary: it has no column(s) {absent}")
    keys = sweep_keys(table)
    for condition in where or []:
        name, sep, value = condition.partition("=")
        if not sep or name not in keys:
            fail(f"--where {condition!r} must be KEY=VALUE with KEY one of {keys}")
        kept = table[table[name].astype(str) == value]
        if kept.empty:
            fail(f"--where {condition!r}: {name} takes the values "
                 f"{sorted(set(table[name].astype(str)))}")
        table = kept
    if key is None:
        key = axis_key(table)
        if key is None:
            fail(f"the sweep has keys {keys}: choose one with --key (and the others with "
                 f"--where KEY=VALUE)")
    lines: dict[float, str] = {}
    for mark in marks or []:
        value, sep, label = mark.partition("=")
        try:
            lines[float(value)] = label if sep else value
        except ValueError:
            fail(f"--mark {mark!r} must be VALUE=LABEL with a numeric VALUE")
    path = out or sweep_dir / f"sweep_{key.rsplit('.', 1)[-1]}.png"
    try:
        plot_sweep(table, key, metrics or evaluation_metrics(table), path, models=models,
                   marks=lines, title=sweep_dir.name)
    except ValueError as err:
        fail(err)
    typer.echo(f"written {path}")


@app.command("plot-pairs")
def plot_pairs_command(
    run_dir: Annotated[Path, typer.Argument(help="a run directory holding results.json",
                                            exists=True, file_okay=False)],
    metrics: Annotated[list[str] | None, typer.Option("--metric", help="metrics to plot "
                                                      "(default: the run's test metrics)")] = None,
) -> None:
    """Paired bar plot of EMCDR_X vs TMCDR_X per base X (SSCDR vs TMCDR_CML): TMCDR Fig. 1."""
    import json

    from cdrec.report import method_pairs, plot_pairs

    results = json.loads((run_dir / "results.json").read_text())
    signif = json.loads((run_dir / "significance.json").read_text())
    pairs = method_pairs(list(results), extra={"TMCDR_CML": "SSCDR"})
    out = run_dir / "pairs.png"
    try:
        plot_pairs(results, metrics or signif["metrics"], out, pairs, title=run_dir.name)
    except (ValueError, KeyError) as err:
        fail(err)
    typer.echo(f"written {out}")


@app.command("plot-tsne")
def plot_tsne_command(
    run_dir: Annotated[Path, typer.Argument(help="a run directory with saved models",
                                            exists=True, file_okay=False)],
    model: Annotated[str, typer.Option(help="model label (a transfer method)")],
    seed: Annotated[int | None, typer.Option(help="which seed (default: the first)")] = None,
    users: Annotated[int, typer.Option(min=2, help="users per group")] = 256,
) -> None:
    """t-SNE of transformed vs true target embeddings, training and test users (MetaEM Fig. 2)."""
    from cdrec.config import load_config, load_data
    from cdrec.figures import plot_transfer_tsne, transfer_embeddings
    from cdrec.models.coldstart.transfer import TransferMethod
    from cdrec.models.persist import load_model

    try:
        file = _model_file(run_dir, model, seed)
        fitted = load_model(file)
        if not isinstance(fitted, TransferMethod):
            raise ValueError(f"{model} is not a transfer method: it maps no embeddings")
        cfg = load_config(run_dir / "config.yaml")
        chosen = int(file.stem.rpartition("_seed")[2])
        data = load_data(cfg.data)
        split = cfg.scenario.build().split(data, chosen)
        out = run_dir / f"tsne_{file.stem}.png"
        plot_transfer_tsne(transfer_embeddings(fitted, split, data, users, seed=chosen), out,
                           f"{model}, seed {chosen}: target vs transformed embeddings")
    except USER_ERRORS as err:
        fail(err)
    typer.echo(f"written {out}")


@app.command("plot-temperatures")
def plot_temperatures_command(
    run_dir: Annotated[Path, typer.Argument(help="a run directory with saved models",
                                            exists=True, file_okay=False)],
    model: Annotated[str, typer.Option(help="model label (UCLR or PGE+UCL-AE)")] = "UCLR",
    seed: Annotated[int | None, typer.Option(help="which seed (default: the first)")] = None,
    groups: Annotated[int, typer.Option(min=1, help="activity groups")] = 9,
    domain: Annotated[str | None, typer.Option(help=(
        "the temperatures a domain's finetune ended with, against that domain's activity "
        "(default: the shared stage's, against all domains' interactions)"))] = None,
) -> None:
    """Learned per-user temperatures by user activity group, mean and std (UCLR Fig. 5)."""
    import torch

    from cdrec.config import load_config, load_data
    from cdrec.figures import plot_temperatures, temperature_groups
    from cdrec.models.multitarget.uclr import UCLR
    from cdrec.models.persist import load_model
    from cdrec.scenarios.leave_one_out import training_counts

    try:
        file = _model_file(run_dir, model, seed)
        fitted = load_model(file)
        if not isinstance(fitted, UCLR):
            raise TypeError(f"{model} is not UCLR or one of its ablations: it learns no "
                            "per-user temperatures")
        cfg = load_config(run_dir / "config.yaml")
        chosen = int(file.stem.rpartition("_seed")[2])
        train = cfg.scenario.build().split(load_data(cfg.data), chosen).train
        per_domain = training_counts(train)
        if domain is not None and domain not in per_domain:
            raise KeyError(f"{model} was fitted on {sorted(per_domain)}, not {domain!r}")
        counts = per_domain[domain] if domain is not None else sum(
            per_domain.values(), torch.zeros(train.data.n_users, dtype=torch.long))
        table = temperature_groups(counts, fitted.user_temperatures(domain).cpu(), groups)
        stem = f"temperatures_{file.stem}" + (f"_{domain}" if domain else "")
        out = run_dir / f"{stem}.png"
        table.to_csv(run_dir / f"{stem}.csv", index=False)
        plot_temperatures(table, out, f"{model}, seed {chosen}"
                          + (f", {domain} finetune" if domain else "")
                          + ": learned temperature by user activity")
    except USER_ERRORS as err:
        fail(err)
    typer.echo(table.to_string(index=False))
    typer.echo(f"written {out}")


@app.command("federated-devices")
def federated_devices_command(
    config: Annotated[Path, typer.Argument(help="a cdrec YAML config", exists=True,
                                           dir_okay=False)],
    model: Annotated[str, typer.Option(help="label of a federated model (FedMetaEM, FedMF)")],
    out: Annotated[Path, typer.Option(help="the device data file to write")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key.sub=value overrides: the same as the deployment's run config")] = None,
    seed: Annotated[int, typer.Option(help="the split's seed (the deployment's run config)")] = 0,
    max_devices: Annotated[int | None, typer.Option(
        min=1, help=("keep only N devices: those with ratings in every domain first, in user "
                     "order (partitions 0..N-1)"))] = None,
) -> None:
    """Write the device data of a Flower deployment: each user's training ratings, one partition
    per device (SuperNode --node-config "partition-id=P data-path=OUT")."""
    import torch

    from cdrec.config import load_config, load_data
    from cdrec.federated.devices import DeviceStore
    from cdrec.models import build_model
    from cdrec.models.coldstart.federated import FederatedTransfer
    from cdrec.train import FitContext

    try:
        cfg = load_config(config, list(overrides or []))
        name, params = cfg.model_params(model)
        fitted = build_model(name, **params)
        if not isinstance(fitted, FederatedTransfer):
            raise ValueError(f"{model} ({name}) is not a federated model")
        split = cfg.scenario.build().split(load_data(cfg.data), seed)
        _, devices, _, _ = fitted.device_view(split.train, FitContext(seed=seed, progress=False))
        store = DeviceStore.from_view(devices)
        if max_devices is not None:
            both = torch.stack([store.indptr[d].diff() > 0 for d in store.domains]).all(0)
            order = torch.cat([both.nonzero().squeeze(1), (~both).nonzero().squeeze(1)])
            store = store.subset(order[:max_devices].tolist())
        store.save(out)
    except USER_ERRORS as err:
        fail(err)
    typer.echo(f"written {out}: {len(store)} devices (partition-id 0..{len(store) - 1}) of "
               f"split {store.fingerprint}")


@app.command()
def models() -> None:
    """List the registered models and the scenarios each supports."""
    from cdrec.models import available_models

    for name, cls in available_models().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        typer.echo(f"{name:12s} [{', '.join(sorted(cls.supports))}] {doc}")



@app.command()
def scenarios() -> None:
    """List the registered scenarios (``scenario.kind``) and their parameters with defaults."""
    import dataclasses

    from cdrec.scenarios import scenario_class, scenario_names

    for name in scenario_names():
        cls = scenario_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name}: {doc}")
        for field in dataclasses.fields(cls):
            default = ("(required)" if field.default is dataclasses.MISSING
                       else f"= {field.default!r}")
            typer.echo(f"    {field.name} {default}")


if __name__ == "__main__":
    app()
