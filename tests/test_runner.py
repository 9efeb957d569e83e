"""End to end: config -> run directory, the CLI, overrides, resume and config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cdrec.cli import app
from cdrec.config import load_config, load_configs
from cdrec.report import axis_key, evaluation_metrics
from cdrec.runner import run

ROOT = Path(__file__).resolve().parents[1]
FAST = ["seeds=[0,1]", "progress=false", "models.TGT.epochs=3", "models.CMF.epochs=3",
        "models.EMCDR.base_config.epochs=3", "models.EMCDR.epochs=5"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [*FAST, f"output_dir={out}"])
    result = run(cfg)
    return result, Path(result["dir"])  # quickstart+<hash of FAST>: overrides name their run


def test_run_writes_results_with_the_config_that_made_them(quick_run):
    result, out = quick_run
    for name in ("config.yaml", "results.json", "results.md", "significance.json",
                 "per_user.parquet", "curves.png", "history.csv", "splits.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["ItemMean", "TGT", "CMF", "EMCDR"]
    for model, metrics in results.items():
        for metric in ("MAE", "RMSE"):
            cell = metrics[metric]
            assert len(cell["per_seed"]) == 2
            assert cell["mean"] == pytest.approx(sum(cell["per_seed"]) / 2)
            assert 0.3 < cell["mean"] < 2.0, (model, cell)
    assert "chosen_epoch" in results["EMCDR"] and "validation_RMSE" in results["EMCDR"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["models"]["EMCDR"]["base_config"]["epochs"] == 3  # resolved, overrides applied
    assert config["models"]["EMCDR"]["mapping"] == "mlp"      # defaults written out
    users = pd.read_parquet(out / "per_user.parquet")
    assert set(users.model) == set(results)
    from cdrec.data.catalog import sample_path
    from cdrec.data.readers import read_douban

    original = read_douban(sample_path("douban")).user_ids
    assert (users.user_id.to_numpy() == original[users.user.to_numpy()]).all()
    assert users.groupby(["model", "seed"]).user.nunique().nunique() == 1  # same test users
    signif = json.loads((out / "significance.json").read_text())
    assert signif["best_floor"] == "ItemMean" and signif["reference"] == "TGT"
    assert set(signif["tests"]["EMCDR"]) == {"ItemMean", "TGT"}
    assert "| EMCDR |" in result["table"] and "±" in result["table"]


def test_run_writes_every_fitted_model_and_a_loaded_one_reproduces_its_row(quick_run):
    from cdrec.config import load_data
    from cdrec.models.persist import load_model
    from cdrec.runner import model_path

    result, out = quick_run
    for label in ("ItemMean", "TGT", "CMF", "EMCDR"):
        for seed in (0, 1):
            assert model_path(out, label, seed).exists(), (label, seed)
    cfg = load_config(out / "config.yaml")
    split = cfg.scenario.build().split(load_data(cfg.data), 1)
    model = load_model(model_path(out, "EMCDR", 1))
    mae = split.test.evaluate(model)["MAE"]
    assert mae == pytest.approx(result["results"]["EMCDR"]["MAE"]["per_seed"][1], abs=1e-9)


def test_cli_recommends_for_known_users_new_users_and_user_files(quick_run, tmp_path):
    _, out = quick_run
    runner = CliRunner()
    known = runner.invoke(app, ["recommend", str(out), "--model", "EMCDR", "--user", "9",
                                "-k", "4"])
    assert known.exit_code == 0, known.output
    assert len(known.output.strip().splitlines()) == 2 + 4  # model line, header, 4 items
    new = runner.invoke(app, ["recommend", str(out), "--model", "EMCDR", "--seed", "1",
                              "--history", str(ROOT / "examples" / "new_user_books.csv")])
    assert new.exit_code == 0, new.output
    assert "EMCDR_seed1.pt" in new.output and len(new.output.strip().splitlines()) == 12
    as_json = tmp_path / "history.json"  # {item: rating}, one unknown item among them
    as_json.write_text('{"2874": 5, "4528": 4, "no-such-book": 3}')
    new_json = runner.invoke(app, ["recommend", str(out), "--model", "EMCDR", "--history",
                                   str(as_json), "-k", "2"])
    assert new_json.exit_code == 0, new_json.output
    assert "1 of 3 history item id(s) are not items of the source domain 'book': " \
        "'no-such-book'" in new_json.output
    ids = tmp_path / "ids.csv"
    ids.write_text("user\n9\n19\n25\n")
    lists = tmp_path / "lists.parquet"
    batch = runner.invoke(app, ["recommend", str(out), "--model", "TGT", "--users", str(ids),
                                "--output", str(lists), "-k", "3"])
    assert batch.exit_code == 0, batch.output
    assert "3 users, top 3" in batch.output
    frame = pd.read_parquet(lists)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    assert sorted(set(frame.user)) == [9, 19, 25] and len(frame) == 9


def test_cli_draws_the_tsne_of_a_saved_transfer_method(quick_run):
    _, out = quick_run
    result = CliRunner().invoke(app, ["plot-tsne", str(out), "--model", "EMCDR", "--seed", "1",
                                      "--users", "20"])
    assert result.exit_code == 0, result.output
    assert (out / "tsne_EMCDR_seed1.png").stat().st_size > 10_000
    refused = CliRunner().invoke(app, ["plot-tsne", str(out), "--model", "TGT"])
    assert refused.exit_code == 2 and "not a transfer method" in refused.output


@pytest.mark.parametrize(("args", "message"), [
    ([], "exactly one of --user, --users and --history"),
    (["--user", "9", "--history", "README.md"], "got --user and --history"),
    (["--user", "9"], "holds several models: pass --model, one of"),
    (["--model", "EMCDRR", "--user", "9"], "has no saved model 'EMCDRR'"),
    (["--model", "EMCDR", "--seed", "7", "--user", "9"], "not 7"),
    (["--model", "EMCDR", "--user", "no-such-user"], "'no-such-user'"),
    (["--model", "CMF", "--history", "examples/new_user_books.csv"],
     "CMF cannot recommend for a new user"),
])
def test_cli_recommend_errors_say_what_to_do(quick_run, args, message):
    _, out = quick_run
    result = CliRunner().invoke(app, ["recommend", str(out), *[
        str(ROOT / a) if a.endswith((".csv", ".md")) else a for a in args]])
    assert result.exit_code == 2
    assert message in result.output


def test_resume_reuses_finished_runs(quick_run):
    _, out = quick_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    before = (out / "seeds" / "EMCDR_seed1.json").stat().st_mtime_ns
    again = run(load_config(ROOT / "configs" / "quickstart.yaml",
                            [*FAST, f"output_dir={Path(cfg['output_dir'])}"]), resume=True)
    assert (out / "seeds" / "EMCDR_seed1.json").stat().st_mtime_ns == before
    assert again["results"] == json.loads((out / "results.json").read_text())


def test_resume_refits_what_the_config_changed(quick_run, capsys):
    _, out = quick_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    stamp = {m: (out / "seeds" / f"{m}_seed0.json").stat().st_mtime_ns for m in ("TGT", "CMF")}
    # name= keeps the fixture's directory (another override alone would get its own).
    changed = load_config(ROOT / "configs" / "quickstart.yaml",
                          [*FAST, "models.TGT.epochs=2", f"output_dir={Path(cfg['output_dir'])}",
                           f"name={out.name}"])
    again = run(changed, resume=True)
    assert (out / "seeds" / "CMF_seed0.json").stat().st_mtime_ns == stamp["CMF"]
    assert (out / "seeds" / "TGT_seed0.json").stat().st_mtime_ns != stamp["TGT"]
    assert "TGT seed 0: its config changed" in capsys.readouterr().out
    assert again["results"]["TGT"]["chosen_epoch"]["mean"] <= 2
    # Put the fixture's TGT back so other tests see the original run.
    run(load_config(ROOT / "configs" / "quickstart.yaml",
                    [*FAST, f"output_dir={Path(cfg['output_dir'])}"]), resume=True)


def test_resume_continues_an_interrupted_fit_from_its_checkpoints(tmp_path, capsys):
    args = [*FAST, "seeds=[0]", "models={TGT: {epochs: 3}}", f"output_dir={tmp_path}",
            "name=interrupted"]  # one directory, whatever the overrides
    first = run(load_config(ROOT / "configs" / "quickstart.yaml", args))
    out = Path(first["dir"])
    # An interrupted run: checkpoints written, per-seed result not yet.
    (out / "seeds" / "TGT_seed0.json").unlink()
    (out / "seeds" / "TGT_seed0.parquet").unlink()
    checkpoint = next((out / "checkpoints" / "TGT" / "seed0").glob("*.pt"))
    written = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    again = run(load_config(ROOT / "configs" / "quickstart.yaml", args), resume=True)
    assert "config changed" not in capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == written  # finished stage loaded, not retrained
    assert again["results"]["TGT"]["RMSE"] == first["results"]["TGT"]["RMSE"]
    # The same checkpoints under another config are thrown away, with a message.
    changed = run(load_config(ROOT / "configs" / "quickstart.yaml",
                              [*args, "models.TGT.dim=8"]), resume=True)
    assert "TGT seed 0: its config changed" in capsys.readouterr().out
    assert changed["results"]["TGT"]["RMSE"] != first["results"]["TGT"]["RMSE"]


def test_cli_runs_and_prints_the_table(tmp_path):
    res = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "quickstart.yaml"), "seeds=[0]",
                                   "models={ItemMean: {}, TGT: {epochs: 2}}",
                                   f"output_dir={tmp_path}", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "| TGT |" in res.output and "| ItemMean |" in res.output


def test_compare_tests_named_pairs_head_to_head(tmp_path):
    from scipy.stats import wilcoxon

    res = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "quickstart.yaml"),
                                   "seeds=[0,1]", "models={ItemMean: {}, TGT: {epochs: 3}}",
                                   "compare=[[TGT, ItemMean]]", f"output_dir={tmp_path}",
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "Head to head" in res.output and "| TGT | ItemMean | MAE |" in res.output
    out = Path(re.search(r"written to (.+)/\n", res.output).group(1))
    duel = json.loads((out / "significance.json").read_text())["head_to_head"][0]
    users = pd.read_parquet(out / "per_user.parquet").sort_values(["seed", "user"])
    a = users[users.model == "TGT"].MAE.to_numpy()
    b = users[users.model == "ItemMean"].MAE.to_numpy()
    assert duel["tests"]["MAE"]["n"] == len(a) == len(b)
    assert duel["tests"]["MAE"]["wilcoxon_p"] == pytest.approx(wilcoxon(a, b).pvalue)
    assert duel["tests"]["MAE"]["mean_a"] == pytest.approx(a.mean())


@pytest.mark.parametrize("override, message", [
    ("models.Nope={}", "unknown model 'Nope'"),
    ("compare=[[TGT, Nope]]", "compare: names Nope"),
    ("seedz=[1]", "seedz"),
    ("scenario.params.test_fraction=2", "test_fraction must be in"),
    ("data.path=no/such/dir", "does not exist"),
])
def test_bad_configs_fail_with_a_clear_message(tmp_path, override, message):
    res = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "quickstart.yaml"), override,
                                   f"output_dir={tmp_path}", "--quiet"])
    assert res.exit_code == 2
    assert message in res.output


@pytest.mark.parametrize(("override", "message"), [
    ("scenario.params.n_neg=many",
     "quickstart.yaml: scenario.params.n_neg: Input should be a valid integer (got 'many')"),
    ("scenario.params.beta=0.2", ("quickstart.yaml: scenario.params: unknown parameter 'beta' "
                                  "of scenario 'coldstart'; accepted: source, target,")),
    ("scenario.kind=cold_start", ("quickstart.yaml: scenario.kind: unknown scenario 'cold_start' "
                                  "(did you mean 'coldstart'?); available: coldstart,")),
])
def test_scenario_params_are_checked_before_any_data_is_read(override, message):
    # data.path does not exist: the scenario error must come first, naming the file and key
    with pytest.raises(ValueError) as err:
        load_configs(ROOT / "configs" / "quickstart.yaml", [override, "data.path=/no/such/dir"])
    assert "quickstart.yaml" in str(err.value) and message in str(err.value)


def test_cli_lists_models_and_datasets():
    runner = CliRunner()
    models = runner.invoke(app, ["models"])
    assert models.exit_code == 0 and "EMCDR" in models.output and "coldstart" in models.output
    listed = runner.invoke(app, ["scenarios"])
    assert listed.exit_code == 0
    assert "coldstart:" in listed.output and "    source (required)" in listed.output
    assert "    k = 5" in listed.output  # kfold_rating's folds, with its default
    data = runner.invoke(app, ["datasets"])
    assert data.exit_code == 0 and "douban" in data.output


def test_sweep_expands_into_named_runs():
    from cdrec.config import load_configs

    configs = load_configs(ROOT / "configs" / "douban_coldstart.yaml")
    assert [c.name for c in configs] == [f"douban_coldstart/test_fraction={b}"
                                         for b in (0.2, 0.5, 0.8)]
    assert [c.scenario.params["test_fraction"] for c in configs] == [0.2, 0.5, 0.8]
    with pytest.raises(ValueError, match="sweeps over 3 runs"):
        load_config(ROOT / "configs" / "douban_coldstart.yaml")
    with pytest.raises(ValueError, match="sweep must map dotted keys to non-empty lists"):
        load_configs(ROOT / "configs" / "douban_coldstart.yaml", ["sweep={seeds: 3}"])


def test_zipped_sweep_moves_keys_together():
    from cdrec.config import load_configs

    configs = load_configs(ROOT / "configs" / "tmcdr_amazon.yaml")
    assert [c.name for c in configs] == [
        "tmcdr_amazon/domains=sport+cloth,source=sport,target=cloth",
        "tmcdr_amazon/domains=phone+electronic,source=phone,target=electronic"]
    assert configs[1].data.domains == ["phone", "electronic"]
    assert configs[1].scenario.params["target"] == "electronic"


def test_plot_pairs_draws_emcdr_against_tmcdr(tmp_path):
    from cdrec.report import method_pairs, plot_pairs

    labels = ["Popularity", "EMCDR_MF", "TMCDR_MF", "SSCDR", "TMCDR_CML", "TMCDR_BPR"]
    pairs = method_pairs(labels, extra={"TMCDR_CML": "SSCDR"})
    assert pairs == [("MF", "EMCDR_MF", "TMCDR_MF"), ("CML", "SSCDR", "TMCDR_CML")]
    cell = {"mean": 0.7, "std": 0.01, "per_seed": [0.7]}
    results = {label: {"AUC": cell, "NDCG@10": cell} for label in labels}
    plot_pairs(results, ["AUC", "NDCG@10"], tmp_path / "p.png", pairs)
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no \\(baseline, method\\) pairs"):
        plot_pairs(results, ["AUC"], tmp_path / "q.png", [])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_builds_its_models(path):
    from cdrec.models import build_model
    from cdrec.tune import check_space

    for cfg in load_configs(path):
        for label in cfg.models:
            name, params = cfg.model_params(label)
            build_model(name, **params)  # every setting is a valid one
        for label, space in cfg.tune.items():  # and so is each bound of each search space
            check_space(label, *cfg.model_params(label), space)


def test_a_sweep_run_writes_its_summary_and_figure(tmp_path):
    """`cdrec run` over a one-key sweep writes sweep.csv (each point's aggregate results) and
    sweep.png; `cdrec plot-sweep` redraws it with a mark and rejects an unknown metric."""
    config = yaml.safe_load((ROOT / "configs" / "kfold_douban_sample.yaml").read_text())
    config["models"] = {"ItemMean": {}, "MF": {"epochs": 2}}
    config["seeds"] = [0, 1]
    config["output_dir"] = str(tmp_path / "runs")
    config["sweep"] = {"models.MF.dim": [4, 16]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    parent = tmp_path / "runs" / "kfold_douban_sample"
    table = pd.read_csv(parent / "sweep.csv")
    assert (parent / "sweep.png").stat().st_size > 1000
    for dim in (4, 16):
        point = json.loads((parent / f"dim={dim}" / "results.json").read_text())
        row = table[(table["models.MF.dim"] == dim) & (table.model == "MF")
                    & (table.metric == "RMSE")].iloc[0]
        assert row["mean"] == pytest.approx(point["MF"]["RMSE"]["mean"])
        assert row["seeds"] == 2
    # the floor ignores MF's size: the same cell at both points
    floor = table[(table.model == "ItemMean") & (table.metric == "RMSE")]["mean"]
    assert floor.nunique() == 1
    drawn = runner.invoke(app, ["plot-sweep", str(parent), "--metric", "RMSE",
                                "--mark", "8=k(k-1)/2", "--out", str(tmp_path / "m.png")])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "m.png").stat().st_size > 1000
    bad = runner.invoke(app, ["plot-sweep", str(parent), "--metric", "AUC"])
    assert bad.exit_code != 0 and "no metric ['AUC']" in bad.output
    # the default figure's panels are the evaluator's metrics, not the runner's costs
    assert "fit_seconds" in set(table.metric) and "chosen_epoch" in set(table.metric)
    assert sorted(evaluation_metrics(table)) == ["MAE", "Precision@5", "RMSE", "Recall@5"]


def sweep_rows(points: dict[tuple[int, float], float]) -> pd.DataFrame:
    """A sweep.csv over dim x lr: one RMSE row and one fit_seconds row per point."""
    rows = []
    for (dim, lr), rmse in points.items():
        for metric, mean in (("RMSE", rmse), ("fit_seconds", 10.0)):
            rows.append({"models.MF.dim": dim, "models.MF.lr": lr, "model": "MF",
                         "metric": metric, "mean": mean, "std": 0.01, "seeds": 2})
    return pd.DataFrame(rows)


def test_plot_sweep_over_a_product_of_keys_asks_for_the_other_keys(tmp_path):
    grid = {(4, 0.1): 0.9, (4, 0.01): 0.88, (16, 0.1): 0.87, (16, 0.01): 0.86}
    sweep_rows(grid).to_csv(tmp_path / "sweep.csv", index=False)
    assert axis_key(sweep_rows(grid)) is None
    runner = CliRunner()
    plain = runner.invoke(app, ["plot-sweep", str(tmp_path)])
    assert plain.exit_code != 0 and "--where" in plain.output
    keyed = runner.invoke(app, ["plot-sweep", str(tmp_path), "--key", "models.MF.dim"])
    assert keyed.exit_code != 0 and "['models.MF.lr'] vary" in keyed.output
    drawn = runner.invoke(app, ["plot-sweep", str(tmp_path), "--key", "models.MF.dim",
                                "--where", "models.MF.lr=0.01", "--out", str(tmp_path / "d.png")])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "d.png").stat().st_size > 1000
    unknown = runner.invoke(app, ["plot-sweep", str(tmp_path), "--key", "models.MF.dim",
                                  "--where", "models.MF.lr=0.5"])
    assert unknown.exit_code != 0 and "takes the values ['0.01', '0.1']" in unknown.output
    # a paired sweep (dim and lr together): either key alone fixes a point
    paired = sweep_rows({(4, 0.1): 0.9, (16, 0.01): 0.86})
    assert axis_key(paired) == "models.MF.dim"
    (tmp_path / "bad").mkdir()
    paired.drop(columns="metric").to_csv(tmp_path / "bad" / "sweep.csv", index=False)
    bad = runner.invoke(app, ["plot-sweep", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "no column(s) ['metric']" in bad.output


def test_sweep_marks_sit_between_their_neighbours_on_a_log_scale():
    from cdrec.report import _sweep_position

    values = [0, 8, 16, 32, 64, 128, 256, "all"]
    assert _sweep_position(values, 64) == pytest.approx(4.0)
    assert 4.0 < _sweep_position(values, 120) < 5.0
    assert _sweep_position(values, 120) == pytest.approx(
        4 + (np.log1p(120) - np.log1p(64)) / (np.log1p(128) - np.log1p(64)))
    with pytest.raises(ValueError, match="two numeric sweep values"):
        _sweep_position(["a", "all"], 3)


def test_a_stage_schedule_draws_one_curve_per_stage_across_its_rounds(tmp_path):
    from cdrec.report import plot_curves, schedule_curves

    rows = []
    for r in (1, 2, 3):
        for stage in ("in_domain", "mapping"):
            rows += [{"model": "DML", "seed": 0, "stage": f"{stage}@{r}", "epoch": e,
                      "train_loss": 1.0 / (r + e)} for e in (1, 2)]
        rows.append({"model": "DML", "seed": 0, "stage": "dual_loop", "epoch": r,
                     "train_loss": 1.0 / r, "val_RMSE": 0.9})
    curves = schedule_curves(pd.DataFrame(rows))
    assert sorted(set(curves.stage)) == ["dual_loop", "in_domain", "mapping"]
    assert curves[curves.stage == "in_domain"].epoch.tolist() == [1, 2, 3, 4, 5, 6]
    assert curves[curves.stage == "dual_loop"].epoch.tolist() == [1, 2, 3]
    plot_curves(pd.DataFrame(rows), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
