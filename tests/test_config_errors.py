"""Config errors that point home (file, section, key, what is accepted), checked before any data
is read, and CLI overrides that write a run directory of their own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from cdrec.cli import app
from cdrec.config import DataSpec, load_configs, load_data, model_problems, override_name
from cdrec.data import DataError, DataWarning
from cdrec.models import build_model

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quickstart.yaml"
NO_DATA = "data.path=/no/such/dir"  # a config error must come before any data is looked at


def config_error(*overrides: str, path: Path = QUICK) -> str:
    with pytest.raises(ValueError) as err:
        load_configs(path, list(overrides))
    message = str(err.value)
    # Reformatted, not pydantic's dump or Python's internals.
    for raw in ("validation error for", "errors.pydantic.dev", "__init__()", "Extra inputs",
                "does not exist"):
        assert raw not in message, message
    return message


# ------------------------------------------------------------------------------------------
# Models: unknown parameters, bad values, misspelt names
# ------------------------------------------------------------------------------------------

def test_an_unknown_model_parameter_names_file_label_key_and_the_accepted_keys():
    message = config_error("models.EMCDR.lrr=0.01", NO_DATA)
    assert message == (
        f"{QUICK}: models.EMCDR: unknown parameter 'lrr' (did you mean 'lr'?); accepted: base, "
        "base_config, batch_size, epochs, hidden_factor, lr, mapping, overlap_only, patience, "
        "ridge, ridge_grid, weight_decay")


def test_an_unknown_base_parameter_names_base_config_and_the_bases_keys():
    message = config_error("models.EMCDR.base_config.dimm=8", NO_DATA)
    assert message.startswith(f"{QUICK}: models.EMCDR: base_config: unknown parameter 'dimm' "
                              "(did you mean 'dim'?); accepted: batch_size, dim, epochs,"), message


def test_a_bad_value_names_the_label_the_model_and_the_key():
    message = config_error("models={Fast: {model: EMCDR, epochs: 0}}", NO_DATA)
    assert message == (f"{QUICK}: models.Fast (model EMCDR): epochs: Input should be greater "
                       "than or equal to 1 (got 0)")


def test_every_bad_model_is_listed_one_line_each():
    message = config_error("models.TGT.epochs=x", "models.CMF.lrr=1", NO_DATA)
    lines = message.splitlines()
    assert len(lines) == 2, message
    assert lines[0].startswith(f"{QUICK}: models.TGT: epochs: Input should be a valid integer")
    assert lines[1].startswith(f"{QUICK}: models.CMF: unknown parameter 'lrr'")


def test_a_misspelt_model_name_suggests_the_closest():
    message = config_error("models.EMCRD={}", NO_DATA)
    assert message.startswith(f"{QUICK}: models.EMCRD: unknown model 'EMCRD' (did you mean "
                              "'EMCDR'?); available: BPR,"), message
    with pytest.raises(KeyError, match=r"unknown model 'TMCRD' \(did you mean 'TMCDR'"):
        build_model("TMCRD")


def test_model_problems_of_a_model_without_parameters():
    with pytest.raises(ValidationError) as err:  # build_model raises pydantic's error as is
        build_model("GlobalMean", x=1)
    assert model_problems("GlobalMean", {"x": 1}, err.value) == [
        "unknown parameter 'x'; it takes none"]


# ------------------------------------------------------------------------------------------
# Scenario parameters, data keys, column mappings
# ------------------------------------------------------------------------------------------

def test_an_unknown_scenario_parameter_lists_the_accepted_ones():
    message = config_error("scenario.params.test_fracton=0.3", NO_DATA)
    assert message == (
        f"{QUICK}: scenario.params: unknown parameter 'test_fracton' of scenario 'coldstart' "
        "(did you mean 'test_fraction'?); accepted: source, target, test_fraction, "
        "validation_fraction, implicit, n_neg, binarize_threshold, k")


def test_a_missing_scenario_parameter_is_named():
    assert config_error("scenario.params={target: music}", NO_DATA) == (
        f"{QUICK}: scenario.params.source: required, not given")


def test_unknown_keys_of_the_config_and_its_data_section(tmp_path):
    assert config_error("seedz=[0]", NO_DATA).startswith(
        f"{QUICK}: top level: unknown key 'seedz' (did you mean 'seeds'?); accepted: name, "
        "data, scenario, models, seeds,")
    assert config_error("data.colums={user: u}", NO_DATA).startswith(
        f"{QUICK}: data: unknown key 'colums' (did you mean 'columns'?); accepted: format, "
        "path,")


def test_an_unknown_column_role_is_named_with_the_accepted_roles(tmp_path):
    raw = yaml.safe_load(QUICK.read_text())
    raw["data"] = {"format": "table", "path": "/no/such/file.csv",
                   "columns": {"usr": "uid", "item": "iid"}}
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert config_error(path=path) == (
        f"{path}: data.columns: unknown column role 'usr' (did you mean 'user'?); accepted: "
        "user, item, rating, timestamp, domain")
    assert config_error("data.columns={user: u}", NO_DATA) == (
        f"{QUICK}: data.columns: only formats 'table' and 'recbole' map columns; format "
        "'douban' has fixed columns")


# ------------------------------------------------------------------------------------------
# Fail fast: parameters are checked before the data is read
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "message"), [
    ("scenario.params.test_fraction=-0.2",
     "scenario.params: test_fraction must be in (0, 1), got -0.2"),
    ("models.TGT.epochs=0", "models.TGT: epochs: Input should be greater than or equal to 1"),
    ("models.EMCDR.lrr=0.1", "models.EMCDR: unknown parameter 'lrr'"),
])
def test_a_bad_parameter_fails_before_any_data_is_read(monkeypatch, tmp_path, override, message):
    import cdrec.config
    import cdrec.data.readers
    import cdrec.runner

    def no_reading(*args, **kwargs):
        raise AssertionError("data was read before the parameters were checked")

    for module, name in ((cdrec.config, "load_data"), (cdrec.runner, "load_data"),
                         (cdrec.data.readers, "read_douban")):
        monkeypatch.setattr(module, name, no_reading)
    res = CliRunner().invoke(app, ["run", str(QUICK), override, NO_DATA,
                                   f"output_dir={tmp_path}", "--quiet"])
    assert res.exit_code == 2, res.output
    assert f"{QUICK}: {message}" in res.output, res.output
    assert "does not exist" not in res.output and "AssertionError" not in res.output
    assert not any(tmp_path.iterdir())  # no run directory either


def test_mixed_ids_in_a_config_warn_or_refuse(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user,item,rating\n" + "".join(
        f"{'alice' if i == 4 else i},{i % 3},3\n" for i in range(1, 11)))
    spec = {"format": "table", "path": str(path)}
    with pytest.warns(DataWarning, match=r"row 4, column 'user': user id 'alice'"):
        load_data(DataSpec.model_validate(spec))
    with pytest.raises(DataError) as err:
        load_data(DataSpec.model_validate({**spec, "mixed_ids": "error"}))
    assert (err.value.path, err.value.row, err.value.column) == (str(path), 4, "user")


def test_mixed_ids_does_not_change_the_fingerprint():
    from cdrec.config import fingerprint

    warn, error = load_configs(QUICK, ["data.mixed_ids=warn"]) + load_configs(
        QUICK, ["data.mixed_ids=error"])
    assert fingerprint(warn, {}, 0) == fingerprint(error, {}, 0)


# ------------------------------------------------------------------------------------------
# Overrides name their own run directory
# ------------------------------------------------------------------------------------------

def names(*overrides: str, path: Path = QUICK) -> list[str]:
    return [c.name for c in load_configs(path, list(overrides))]


def test_overrides_that_change_results_name_the_run():
    assert names() == ["quickstart"]
    assert names("seeds=[0]") == ["quickstart+seeds=0"]
    assert names("seeds=[0, 1]", "models.EMCDR.mapping=linear") == [
        "quickstart+seeds=0+1,models.EMCDR.mapping=linear"]
    assert names("seeds=[1]", "seeds=[0]") == ["quickstart+seeds=0"]  # the last value counts
    assert names("scenario.params.test_fraction=0.5") == [
        "quickstart+scenario.params.test_fraction=0.5"]
    # Sweeps keep their points under the overridden name.
    assert names("seeds=[0]", path=ROOT / "configs" / "douban_coldstart.yaml") == [
        f"douban_coldstart+seeds=0/test_fraction={b}" for b in (0.2, 0.5, 0.8)]


def test_overrides_that_do_not_change_results_keep_the_name():
    # What `cdrec run --device ... --quiet` appends, and where or how often it writes.
    assert names("device=cpu", "progress=false", "output_dir=/tmp/elsewhere", "threads=1",
                 "checkpoint_seconds=0") == ["quickstart"]
    assert names("seeds=[0]", "progress=false", "device=cpu") == ["quickstart+seeds=0"]
    assert names("name=mine", "seeds=[0]") == ["mine"]  # an explicit name is used as given


def test_long_or_structured_overrides_get_a_short_stable_hash():
    one = names("models={ItemMean: {}, TGT: {epochs: 2}}")
    assert re.fullmatch(r"quickstart\+[0-9a-f]{8}", one[0]), one
    assert names("models={ItemMean: {}, TGT: {epochs: 2}}") == one  # same overrides, same dir
    assert names("models={ItemMean: {}, TGT: {epochs: 3}}") != one
    assert override_name("x", {"data.path": "../shared/data/douban"}) != override_name(
        "x", {"data.path": "../shared/data/amazon"})
    assert re.fullmatch(r"x\+[0-9a-f]{8}", override_name("x", {"data.path": "a/b"}))


def test_a_cli_override_run_does_not_overwrite_the_earlier_results(tmp_path):
    def cli(*args: str) -> Path:
        res = CliRunner().invoke(app, ["run", str(QUICK), "models={ItemMean: {}}",
                                       f"output_dir={tmp_path}", *args])
        assert res.exit_code == 0, res.output
        return Path(re.search(r"written to (.+)/\n", res.output).group(1))

    both = cli("seeds=[0,1]", "--quiet")
    first = json.loads((both / "results.json").read_text())
    one = cli("seeds=[0]", "--quiet")
    assert one != both and one.parent == both.parent == tmp_path
    assert json.loads((both / "results.json").read_text()) == first  # untouched
    assert len(json.loads((one / "results.json").read_text())["ItemMean"]["MAE"]["per_seed"]) == 1
    # --device and --quiet append overrides of their own: they leave the name alone.
    assert cli("seeds=[0]", "--device", "cpu", "--quiet") == one
    assert yaml.safe_load((one / "config.yaml").read_text())["name"] == one.name
