"""User and item feature tables: values against hand-computed ones, alignment to internal ids,
absent entities, errors naming file / row / column, the config path, and transforms / splits
that keep the tables aligned."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cdrec.config import DataSpec, fingerprint, load_configs, load_data
from cdrec.data import (
    CrossDomainData,
    DataError,
    DataWarning,
    Domain,
    FeatureSpec,
    FeatureTable,
    Interactions,
    k_core,
    read_features,
    read_table,
    with_features,
)
from cdrec.scenarios import build_scenario

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quickstart.yaml"


def write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    """Two domains; users 1..4 (user 4 only in music), book items a, b, c."""
    write(tmp_path / "book.csv", "user,item,rating\n1,a,3\n2,b,4\n3,a,5\n3,c,2\n")
    write(tmp_path / "music.csv", "user,item,rating\n1,x,3\n4,y,4\n")
    # File order differs from the internal order (users sorted 1, 2, 3, 4); user 4 is absent.
    write(tmp_path / "users.csv", "user_id,city,age,tags\n3,paris,30,x|y\n1,rome,20,\n"
                                  "2,paris,40,y\n")
    write(tmp_path / "items.tsv", "item_id\tgenre\tyear\nc\trock\t2000\na\tpop | rock\t2000\n")
    return tmp_path


def user_spec(path: Path, **kw) -> dict:
    return {"path": str(path), "id_column": "user_id", "categorical": ["city", "tags"],
            "numeric": ["age"], **kw}


def read(tables: Path) -> CrossDomainData:
    return read_table({"book": tables / "book.csv", "music": tables / "music.csv"}, features={
        "book": {"users": user_spec(tables / "users.csv"),
                 "items": {"path": str(tables / "items.tsv"), "id_column": "item_id",
                           "categorical": ["genre"], "numeric": ["year"]}},
        "music": {"users": user_spec(tables / "users.csv")}})


# ------------------------------------------------------------------------------------------
# Values and alignment
# ------------------------------------------------------------------------------------------

def test_one_hot_and_z_score_values_aligned_to_internal_ids(tables):
    data = read(tables)
    assert data.user_ids.tolist() == [1, 2, 3, 4]
    users = data["book"].user_features
    assert isinstance(users, FeatureTable) and users.entity == "user"
    assert users.names == ("city=paris", "city=rome", "tags=x", "tags=y", "age")
    # age 20, 40, 30 (users 1, 2, 3): mean 30, population std sqrt(200/3)
    z = 10 / np.sqrt(200 / 3)
    expected = torch.tensor([[0, 1, 0, 0, -z],    # user 1: rome, no tags, 20
                             [1, 0, 0, 1, z],     # user 2: paris, y, 40
                             [1, 0, 1, 1, 0],     # user 3: paris, x|y, 30
                             [0, 0, 0, 0, 0]],    # user 4: no row
                            dtype=torch.float32)
    torch.testing.assert_close(users.values, expected)
    assert users.present.tolist() == [True, True, True, False]
    assert users.scaling["age"] == pytest.approx((30.0, np.sqrt(200 / 3)))
    torch.testing.assert_close(users.column("age"), expected[:, 4])
    assert users.path == str(tables / "users.csv")


def test_identical_user_specs_are_read_once_and_shared(tables):
    data = read(tables)
    assert data["music"].user_features is data["book"].user_features
    assert data["music"].item_features is None


def test_item_features_multi_valued_stripped_and_constant_numeric(tables):
    dom = read(tables)["book"]
    items = dom.item_features
    assert dom.item_ids.tolist() == ["a", "b", "c"]
    assert items.names == ("genre=pop", "genre=rock", "year")
    # year is constant (2000, 2000): zeros; "pop | rock" is two stripped tokens.
    torch.testing.assert_close(items.values, torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 0]],
                                                          dtype=torch.float32))
    assert items.present.tolist() == [True, False, True]
    assert items.scaling["year"] == (2000.0, 0.0)


def test_multi_value_sep_none_keeps_a_cell_as_one_category(tables):
    table = read_features(tables / "items.tsv", np.array(["a", "b", "c"], dtype=object),
                          id_column="item_id", categorical=["genre"], multi_value_sep=None)
    assert table.names == ("genre=pop | rock", "genre=rock")


def test_gzip_and_shuffled_rows_give_the_same_table(tmp_path):
    ids = np.arange(100, 150)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": ids, "score": rng.normal(size=50),
                          "kind": rng.choice(["u", "v", "w"], 50)})
    plain = tmp_path / "f.csv"
    frame.to_csv(plain, index=False)
    shuffled = tmp_path / "g.csv.gz"
    frame.sample(frac=1.0, random_state=1).to_csv(shuffled, index=False, compression="gzip")
    a = read_features(plain, ids, id_column="id", categorical=["kind"], numeric=["score"])
    b = read_features(shuffled, ids, id_column="id", categorical=["kind"], numeric=["score"])
    torch.testing.assert_close(a.values, b.values)
    # Row i is id ids[i]: compare with the z-score computed by pandas.
    z = (frame["score"] - frame["score"].mean()) / frame["score"].std(ddof=0)
    torch.testing.assert_close(a.column("score"), torch.tensor(z.to_numpy(), dtype=torch.float32))
    assert a.column("kind=v").tolist() == (frame["kind"] == "v").astype(float).tolist()


def test_text_ids_match_by_exact_text(tmp_path):
    path = write(tmp_path / "f.csv", "id,n\n042,1\n42,3\n")
    table = read_features(path, np.array(["42", "042"], dtype=object), id_column="id",
                          numeric=["n"])
    assert table.values[:, 0].tolist() == [1.0, -1.0]  # "42" is row 0, "042" row 1


# ------------------------------------------------------------------------------------------
# Errors: file, row (the header is row 1) and column
# ------------------------------------------------------------------------------------------

def error(path: Path, text: str, ids=(1, 2, 3), **kw) -> str:
    write(path, text)
    options = {"id_column": "id", "numeric": ["age"], "entity": "user", **kw}
    with pytest.raises(DataError) as err:
        read_features(path, np.array(ids), **options)
    return str(err.value)


def test_unknown_feature_columns_are_named(tmp_path):
    path = tmp_path / "f.csv"
    message = error(path, "id,age\n1,3\n", categorical=["cty", "town"])
    assert message.startswith(f"file {path}, row 1, column 'cty': feature column(s) 'cty' "
                              "(categorical), 'town' (categorical) not in the header; the "
                              "file has columns 'id', 'age'"), message


def test_a_missing_id_column_is_named(tmp_path):
    path = tmp_path / "f.csv"
    message = error(path, "user,age\n1,3\n")
    assert message == (f"file {path}, row 1, column 'id': no id column 'id' (id_column) in the "
                       "header; the file has columns 'user', 'age'")


def test_an_unknown_id_names_the_id_and_its_row(tmp_path):
    path = tmp_path / "f.csv"
    message = error(path, "id,age\n1,3\n9,4\n")
    assert message.startswith(f"file {path}, row 3, column 'id': user id '9' is not a user of "
                              "the data"), message
    item = error(path, "id,age\n1,3\nzz,4\n", entity="item", domain="book")
    assert item.startswith(f"file {path}, row 3, column 'id': item id 'zz' is not an item of "
                           "domain 'book'"), item


def test_unknown_ids_warn_drops_the_rows(tmp_path):
    path = write(tmp_path / "f.csv", "id,age\n1,3\n9,4\n2,5\n")
    with pytest.warns(DataWarning, match=rf"file {re.escape(str(path))}, row 3, column 'id': "
                                         r"user id '9'.*dropped 1 such row"):
        table = read_features(path, np.array([1, 2, 3]), id_column="id", numeric=["age"],
                              entity="user", unknown_ids="warn")
    assert table.present.tolist() == [True, True, False]
    assert table.values[:, 0].tolist() == [-1.0, 1.0, 0.0]


def test_a_duplicate_id_names_both_rows(tmp_path):
    path = tmp_path / "f.csv"
    message = error(path, "id,age\n1,3\n2,4\n1,5\n")
    assert message.startswith(f"file {path}, row 4, column 'id': user id '1' has two rows, "
                              "row 2 and row 4"), message


def test_a_non_numeric_value_names_row_column_and_value(tmp_path):
    path = tmp_path / "f.csv"
    message = error(path, "id,age\n1,3\n2,old\n")
    assert message.startswith(f"file {path}, row 3, column 'age': user feature value 'old' is "
                              "not a number"), message
    inf = error(path, "id,age\n1,inf\n2,4\n")
    assert inf.startswith(f"file {path}, row 2, column 'age': user feature value 'inf' is not "
                          "a finite number"), inf


def test_an_empty_numeric_value_is_named(tmp_path):
    path = tmp_path / "f.csv"
    message = error(path, "id,name,age\n1,a,3\n2,b,\n3,c, \n")
    assert message.startswith(f"file {path}, row 3, column 'age': user feature value is empty"
                              ), message
    assert "2 such rows" in message


def test_a_missing_id_and_an_empty_file_are_refused(tmp_path):
    path = tmp_path / "f.csv"
    assert error(path, "id,age\n1,3\n,4\n").startswith(f"file {path}, row 3, column 'id': "
                                                       "user id is missing")
    assert "no data rows" in error(path, "id,age\n")


def test_bad_specs_are_refused_before_reading(tmp_path):
    with pytest.raises(ValueError, match="at least one categorical or numeric"):
        FeatureSpec(path="f.csv", id_column="id")
    with pytest.raises(ValueError, match="'age' is listed as categorical and as numeric"):
        FeatureSpec(path="f.csv", id_column="id", categorical=["age"], numeric=["age"])
    with pytest.raises(ValueError, match="'id' is the id column"):
        read_features(tmp_path / "none.csv", [1], id_column="id", numeric=["id"])


# ------------------------------------------------------------------------------------------
# Dataset invariants, transforms and splits
# ------------------------------------------------------------------------------------------

def test_a_misaligned_table_is_refused(tables):
    dom = read(tables)["book"]
    with pytest.raises(ValueError, match="item_features has 2 rows but the domain has 3 items"):
        replace(dom, item_features=dom.item_features.select(torch.tensor([0, 1])))
    data = read(tables)
    short = data["book"].user_features.select(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="user_features has 2 rows but the data has 4 users"):
        data.replace_domains({"book": replace(data["book"], user_features=short)})


def test_data_without_features_is_unchanged(tables):
    data = read_table({"book": tables / "book.csv"})
    assert data["book"].user_features is None and data["book"].item_features is None


def test_k_core_selects_the_item_rows_of_the_items_kept(tables):
    data = read(tables)
    core = k_core(data, 1, domains=["book"])  # every item kept
    assert core["book"].item_features.values.shape == (3, 3)
    # Drop item 'b' by removing its row: the feature rows follow the re-indexed items.
    dom = data["book"]
    keep = dom.interactions.item != 1
    small = data.replace_domains({**data.domains, "book": dom.with_interactions(
        dom.interactions.select(keep))})
    core = k_core(small, 1, domains=["book"])["book"]
    assert core.item_ids.tolist() == ["a", "c"]
    torch.testing.assert_close(core.item_features.values, dom.item_features.values[[0, 2]])
    assert core.user_features is dom.user_features


def test_resample_users_copies_the_feature_rows(tables):
    from cdrec.data.synthetic import resample_users

    data = read(tables)
    grown = resample_users(data, 2.0, seed=0)
    table = grown["book"].user_features
    assert table.n_rows == grown.n_users and grown["music"].user_features is table
    original = [int(u.split("#")[0]) for u in grown.user_ids.tolist()]
    index = torch.tensor([data.user_ids.tolist().index(u) for u in original])
    torch.testing.assert_close(table.values, data["book"].user_features.values[index])


def douban_with_features(douban_sample, tmp_path: Path) -> CrossDomainData:
    rng = np.random.default_rng(0)
    users = pd.DataFrame({"uid": douban_sample.user_ids, "age": rng.integers(15, 70, len(
        douban_sample.user_ids)), "group": rng.choice(["a", "b"], len(douban_sample.user_ids))})
    users.sample(frac=0.9, random_state=0).to_csv(tmp_path / "users.csv", index=False)
    items = douban_sample["book"].item_ids
    pd.DataFrame({"iid": items[::-1], "pop": rng.normal(size=len(items))}).to_csv(
        tmp_path / "books.tsv", sep="\t", index=False)
    return with_features(douban_sample, {
        "book": {"users": FeatureSpec(tmp_path / "users.csv", "uid", ["group"], ["age"]),
                 "items": FeatureSpec(tmp_path / "books.tsv", "iid", numeric=["pop"])},
        "music": {"users": FeatureSpec(tmp_path / "users.csv", "uid", ["group"], ["age"])}})


@pytest.mark.parametrize(("kind", "params"), [
    ("kfold_rating", {"k": 5}),
    ("coldstart", {"source": "book", "target": "music"}),
])
def test_a_split_train_view_keeps_the_features_aligned(douban_sample, tmp_path, kind, params):
    data = douban_with_features(douban_sample, tmp_path)
    split = build_scenario(kind, params).split(data, 0)
    train = split.train.data
    assert train.n_users == data.n_users
    for name in ("book", "music"):
        assert train[name].user_features is data[name].user_features
        assert train[name].item_features is data[name].item_features
    # Row u is still user u: its group matches the file's row for user_ids[u].
    frame = pd.read_csv(tmp_path / "users.csv").set_index("uid")
    table = train["book"].user_features
    present = table.present.numpy()
    groups = frame.loc[data.user_ids[present], "group"].to_numpy()
    assert (table.column("group=b").numpy()[present] == (groups == "b")).all()
    assert not table.values[~table.present].any()
    assert 0.85 < present.mean() < 0.95


# ------------------------------------------------------------------------------------------
# The config's data section
# ------------------------------------------------------------------------------------------

def table_config(tables: Path, tmp_path: Path, features: dict) -> Path:
    raw = yaml.safe_load(QUICK.read_text())
    raw["data"] = {"format": "table", "path": str(tables),
                   "files": {"book": "book.csv", "music": "music.csv"}, "features": features}
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_config_with_features_loads_through_the_config_path(tables, tmp_path):
    users = {"path": "users.csv", "id_column": "user_id", "categorical": ["city", "tags"],
             "numeric": ["age"]}
    path = table_config(tables, tmp_path, {
        "book": {"users": users, "items": {"path": "items.tsv", "id_column": "item_id",
                                           "categorical": ["genre"]}},
        "music": {"users": users}})
    (config,) = load_configs(path)
    data = load_data(config.data)
    assert data["book"].user_features.names == read(tables)["book"].user_features.names
    torch.testing.assert_close(data["book"].user_features.values,
                               read(tables)["book"].user_features.values)
    assert data["music"].user_features is data["book"].user_features
    assert data["book"].item_features.names == ("genre=pop", "genre=rock")
    # Features change what a run computes, so they are in the fingerprint.
    (plain,) = load_configs(QUICK)
    assert fingerprint(config, {}, 0) != fingerprint(
        config.model_copy(update={"data": config.data.model_copy(update={"features": {}})}),
        {}, 0)
    # Without features (and the later keys header, duplicates, sources at their defaults), a
    # fingerprint is what it was before feature files existed.
    later = {"mixed_ids", "features", "header", "duplicates", "sources"}
    before = {"data": plain.data.model_dump(mode="json", exclude=later),
              "scenario": plain.scenario.model_dump(mode="json"), "model": {}, "seed": 0}
    digest = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode())
    assert fingerprint(plain, {}, 0) == digest.hexdigest()


def test_config_feature_errors_name_the_key(tables, tmp_path):
    def message(features: dict) -> str:
        with pytest.raises(ValueError) as err:
            load_configs(table_config(tables, tmp_path, features))
        return str(err.value)

    path = tmp_path / "features.yaml"
    spec = {"path": "users.csv", "id_column": "user_id", "numeric": ["age"]}
    assert message({"book": {"users": {**spec, "numerc": ["x"]}}}).startswith(
        f"{path}: data.features.book.users: unknown key 'numerc' (did you mean 'numeric'?); "
        "accepted: path, id_column, categorical, numeric, multi_value_sep, sep, unknown_ids")
    assert message({"book": {"user": spec}}).startswith(
        f"{path}: data.features.book: unknown key 'user' (did you mean 'users'?); accepted: "
        "users, items")
    assert message({"bok": {"users": spec}}) == (
        f"{path}: data.features: unknown domain 'bok' (did you mean 'book'?); the domains are "
        "book, music")
    assert "at least one categorical or numeric column" in message(
        {"book": {"users": {"path": "users.csv", "id_column": "user_id"}}})


def test_a_bad_feature_file_in_a_config_names_file_row_and_column(tables):
    write(tables / "bad.csv", "user_id,age\n1,20\n2,x\n")
    spec = DataSpec.model_validate({
        "format": "table", "path": str(tables), "files": {"book": "book.csv"},
        "features": {"book": {"users": {"path": "bad.csv", "id_column": "user_id",
                                        "numeric": ["age"]}}}})
    with pytest.raises(DataError) as err:
        load_data(spec)
    assert (err.value.path, err.value.row, err.value.column) == (
        str(tables / "bad.csv"), 3, "age")


def test_features_for_an_unknown_domain_after_reading(tables):
    data = read_table({"book": tables / "book.csv"})
    with pytest.raises(ValueError, match=r"domain 'music', which dataset 'book' does not have"):
        with_features(data, {"music": {"users": user_spec(tables / "users.csv")}})
    with pytest.raises(ValueError, match=r"features.book.users: unknown key\(s\) 'colour'"):
        with_features(data, {"book": {"users": {**user_spec(tables / "users.csv"),
                                                "colour": 1}}})


def test_domain_positional_fields_are_unchanged():
    # Readers and tests build Domain positionally: the new fields come last, default None.
    dom = Domain("d", np.arange(2), Interactions.empty(), (1.0, 5.0), None)
    assert dom.user_features is None and dom.item_features is None


def test_merging_domains_with_item_features_drops_the_tables(douban_sample, tmp_path):
    """NCF-joint and the cold-start single-domain baselines merge domains into one; Book's item
    table has Book's rows only, so the merged domain (read by id-only bases) carries none."""
    from cdrec.models.bases.single_domain import merge_domains

    data = douban_with_features(douban_sample, tmp_path)
    split = build_scenario("kfold_rating", {"k": 5}).split(data, 0)
    merged, offsets = merge_domains(split.train, ["book", "music"])
    one = merged.data["book"]
    assert one.n_items == data["book"].n_items + data["music"].n_items
    assert one.item_features is None and one.user_features is None
    assert offsets == {"book": 0, "music": data["book"].n_items}
