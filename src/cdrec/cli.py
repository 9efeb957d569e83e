"""The ``cdrec`` command: run experiments from configs, list datasets and models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

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
    from cdrec.config import load_configs
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
        configs = load_configs(config, extra)
        for cfg in configs:
            if len(configs) > 1:
                typer.secho(f"== {cfg.name}", bold=True)
            out = run_config(cfg, resume=resume)
            if distributed.is_main():
                typer.echo(out["table"])
                typer.echo(f"written to {out['dir']}/")
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
