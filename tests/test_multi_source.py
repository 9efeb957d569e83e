"""`data.format: multi`: several sources (each a data section of its own) read into one dataset
whose users are matched by original id, through the run config as `cdrec run` reads it; a
domain read from several files; repeated (user, item) pairs kept once or refused, never
silently; errors that name the file. Fixture files mimic ../shared/data/douban (ratings) and
../shared/data/douban_movie_partial (two overlapping label files); the real files are read too
when present."""

from __future__ import annotations

import copy
import gzip
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import SHARED_DATA, triples
from typer.testing import CliRunner

from cdrec.cli import app
from cdrec.config import fingerprint, load_configs, load_data, set_dotted
from cdrec.data import DataError, DataWarning, MissingFileError, combine_sources, read_table


def gz(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join("\t".join(map(str, row)) + "\n" for row in rows)
    path.write_bytes(gzip.compress(text.encode()))
    return path


BOOK = [(1, 10, 5), (2, 11, 4), (3, 10, 3), (1, 12, 2)]
MUSIC = [(1, 20, 4), (3, 21, 5), (4, 20, 1)]
# (user 1, item 30) is in both label files, with the same label; user 5 is only in movie.
VAL = [(1, 30, 1), (5, 31, 0), (2, 32, 1)]
TEST = [(1, 30, 1), (3, 33, 0), (5, 34, 1)]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    gz(tmp_path / "douban" / "book_ratings.tsv.gz", BOOK)
    gz(tmp_path / "douban" / "music_ratings.tsv.gz", MUSIC)
    gz(tmp_path / "movie" / "movie_labels_val.tsv.gz", VAL)
    gz(tmp_path / "movie" / "movie_labels_test.tsv.gz", TEST)
    return tmp_path


def douban3(root: Path | str, **movie: Any) -> dict[str, Any]:
    """The data section of configs/uclr_douban3.yaml, over the folders under ``root``."""
    return {"format": "multi", "sources": [
        {"format": "douban", "path": f"{root}/douban", "domains": ["book", "music"]},
        {"format": "table", "path": f"{root}/movie",
         "files": {"movie": ["movie_labels_val.tsv.gz", "movie_labels_test.tsv.gz"]},
         "header": False, "columns": {"user": 0, "item": 1, "rating": 2},
         "rating_scale": [0, 1], "duplicates": "first", **movie}]}


def run_config(tmp_path: Path, data: dict[str, Any], **top: Any) -> Path:
    config = {"name": "douban3", "data": data,
              "scenario": {"kind": "leave_one_out", "params": {"n_neg": 2, "ks": [1]}},
              "models": {"Popularity": {}}, "seeds": [0], **top}
    path = tmp_path / "douban3.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read(tmp_path: Path, data: dict[str, Any], *overrides: str):
    """The data of a run config, read as `cdrec run` reads it."""
    (config,) = load_configs(run_config(tmp_path, data), list(overrides))
    return load_data(config.data)


def config_error(tmp_path: Path, data: dict[str, Any]) -> str:
    path = run_config(tmp_path, data)
    with pytest.raises(ValueError) as err:
        load_configs(path)
    return str(err.value).removeprefix(f"{path}: ")


def test_three_domains_from_two_sources_share_one_user_space(files):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read(files, douban3(files))
    assert list(data.domains) == ["book", "music", "movie"]
    assert data.user_ids.tolist() == [1, 2, 3, 4, 5]  # the sorted union of the original ids
    # A user of several sources is one internal index in every domain.
    index = {int(u): i for i, u in enumerate(data.user_ids)}
    for dom, rows in (("book", BOOK), ("music", MUSIC), ("movie", VAL + TEST)):
        inter = data[dom].interactions
        assert sorted(inter.user.tolist()) == sorted({(u, i): index[u] for u, i, _ in rows}
                                                     .values())
    assert data.overlap_users("book", "movie").tolist() == [index[1], index[2], index[3]]
    assert triples(data, "book") == sorted((u, i, float(r)) for u, i, r in BOOK)
    # The pair in both label files is kept once; label-0 rows are interactions (rating 0).
    assert triples(data, "movie") == [(1, 30, 1.0), (2, 32, 1.0), (3, 33, 0.0), (5, 31, 0.0),
                                      (5, 34, 1.0)]
    assert data["movie"].rating_scale == (0.0, 1.0) and data["book"].rating_scale == (1.0, 5.0)
    # Dropping the repeat is said, with the files and the row dropped.
    (message,) = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert "movie_labels_val.tsv.gz" in message and "1 duplicate (user, item) row(s)" in message
    assert "kept the first occurrence" in message
    assert "row 1 of file " in message and message.split("of file ")[1].startswith(
        str(files / "movie" / "movie_labels_test.tsv.gz"))
    assert data.provenance["reader"] == "combine_sources"
    assert "movie_labels_test.tsv.gz" in data.provenance["sources"]


@pytest.mark.filterwarnings("ignore::cdrec.data.DataWarning")  # the repeat: tested above
def test_leave_one_out_keeps_label_zero_rows_as_interactions(files):
    (config,) = load_configs(run_config(files, douban3(files)),
                             ["scenario.params.n_neg=1", "scenario.params.domains=[movie]"])
    split = config.scenario.build().split(load_data(config.data), 0)
    movie = split.info
    kept = (movie["movie_train_interactions"] + movie["movie_test_users"]
            + movie["movie_validation_users"])
    assert kept == 5  # every distinct pair, label 0 or 1, is an interaction
    assert bool((split.train.data["movie"].interactions.rating == 1).all())


def test_duplicates_error_names_both_files_and_rows(files):
    with pytest.raises(DataError) as err:
        read(files, douban3(files, duplicates="error"))
    test_file = str(files / "movie" / "movie_labels_test.tsv.gz")
    assert (err.value.path, err.value.row) == (test_file, 1)
    message = str(err.value)
    assert "pair ('1', '30') occurs again in domain 'movie'" in message  # as the file has them
    assert f"first at row 1 of file {files / 'movie' / 'movie_labels_val.tsv.gz'}" in message
    assert "set duplicates: first or last" in message


def test_duplicates_last_is_the_default_and_warns(files):
    movie = douban3(files)["sources"][1]
    del movie["duplicates"]
    with pytest.warns(DataWarning, match=r"kept the last occurrence of each pair \(files in the "
                                         r"order given\) and dropped 1 earlier row"):
        data = read(files, {"format": "multi", "sources": [douban3(files)["sources"][0], movie]})
    assert len(data["movie"].interactions) == 5


def test_duplicates_within_one_file_follow_the_option(files):
    gz(files / "movie" / "movie_labels_val.tsv.gz", [*VAL, (5, 31, 1)])  # label differs
    with pytest.raises(DataError) as err:
        read(files, douban3(files, duplicates="error"))
    assert (err.value.path, err.value.row) == (str(files / "movie" / "movie_labels_val.tsv.gz"), 4)
    assert "first at row 2;" in str(err.value)
    with pytest.warns(DataWarning):
        first = read(files, douban3(files))
    assert (5, 31, 0.0) in triples(first, "movie")  # the first row of the pair
    with pytest.warns(DataWarning):
        last = read(files, douban3(files, duplicates="last"))
    assert (5, 31, 1.0) in triples(last, "movie")


def test_a_missing_file_is_named(files):
    (files / "movie" / "movie_labels_test.tsv.gz").unlink()
    with pytest.raises(MissingFileError) as err:
        read(files, douban3(files))
    assert err.value.path == str(files / "movie" / "movie_labels_test.tsv.gz")
    assert "movie_labels_test.tsv.gz: file not found" in str(err.value)


def test_a_missing_source_folder_names_the_source_and_its_key(files):
    data = douban3(files)
    data["sources"][1]["path"] = str(files / "nowhere")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"data.sources.1.path: {files / 'nowhere'} does not exist")) as err:
        read(files, data)
    assert "override it with data.sources.1.path=DIR" in str(err.value)


@pytest.mark.filterwarnings("ignore::cdrec.data.DataWarning")  # the repeat: tested above
def test_a_source_path_can_be_overridden_on_the_command_line(files, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (files / "movie").rename(elsewhere)
    data = douban3(files)
    with pytest.raises(FileNotFoundError):
        read(files, data)
    read(files, data, f"data.sources.1.path={elsewhere}")
    tree: dict[str, Any] = {"a": [{"b": 1}]}
    set_dotted(tree, "a.0.b", 2)
    assert tree == {"a": [{"b": 2}]}
    with pytest.raises(TypeError, match="'3' is not an index of the 1-entry list a"):
        set_dotted(tree, "a.3.b", 2)


def test_a_domain_given_twice_is_refused_before_reading(files):
    data = douban3(files)
    data["sources"][1]["files"] = {"music": "movie_labels_val.tsv.gz"}
    assert config_error(files, data) == (
        f"data.sources.1: domain 'music' is also given by data.sources.0 (douban "
        f"{files}/douban); a domain comes from one source (list several files for it there), "
        f"so rename one")


def test_a_domain_given_twice_is_refused_when_read_naming_the_files(files):
    # A domain column names its domains only when the file is read.
    (files / "t.tsv").write_text("user\titem\trating\tdom\n1\t5\t3\tmusic\n")
    data = douban3(files)
    data["sources"][1] = {"format": "table", "path": str(files / "t.tsv"),
                          "columns": {"domain": "dom"}}
    with pytest.raises(DataError) as err:
        read(files, data)
    message = str(err.value)
    assert message.startswith("domain 'music' is given by two sources: data.sources.0 'douban' "
                              f"({files}/douban; book_ratings.tsv.gz, music_ratings.tsv.gz) and "
                              f"data.sources.1 't' ({files / 't.tsv'})"), message


def test_a_file_with_too_few_fields_is_named(files):
    gz(files / "movie" / "movie_labels_test.tsv.gz", [(u, i) for u, i, _ in TEST])
    with pytest.raises(DataError) as err:
        read(files, douban3(files))
    assert err.value.path == str(files / "movie" / "movie_labels_test.tsv.gz")
    assert "the file has no header and 2 field(s) per line" in str(err.value)


def test_a_line_with_an_extra_field_is_named(files):
    (files / "movie" / "movie_labels_val.tsv.gz").write_bytes(
        gzip.compress(b"1\t30\t1\n5\t31\t0\t9\n"))
    with pytest.raises(DataError) as err:
        read(files, douban3(files))
    assert (err.value.path, err.value.row) == (str(files / "movie" / "movie_labels_val.tsv.gz"), 2)
    assert "malformed line" in str(err.value)


def test_a_domain_from_files_of_two_formats_is_refused(files):
    (files / "movie" / "more.csv").write_text("1,35,1\n")
    data = douban3(files)
    data["sources"][1]["files"]["movie"].append("more.csv")
    data["sources"][1]["columns"]["timestamp"] = "when"
    assert config_error(files, data).startswith(
        "data.sources.1.columns: header: false needs the 0-based position of timestamp")
    del data["sources"][1]["columns"]["timestamp"]
    with pytest.warns(DataWarning):
        assert len(read(files, data)["movie"].interactions) == 6  # headerless CSV and TSV
    more = files / "movie" / "more.parquet"
    pd.DataFrame({"user": [1], "item": [35], "rating": [1]}).to_parquet(more)
    movie = {"format": "table", "path": str(files / "movie"), "rating_scale": [0, 1],
             "files": {"movie": ["val.csv", "more.parquet"]}}
    (files / "movie" / "val.csv").write_text("user,item,rating\n1,30,1\n")
    with pytest.raises(DataError) as err:
        read(files, {"format": "multi", "sources": [douban3(files)["sources"][0], movie]})
    assert err.value.path == str(more)
    assert "domain 'movie' is read from files of different formats" in str(err.value)


def test_user_ids_of_two_types_are_refused_not_left_unmatched(files):
    gz(files / "movie" / "movie_labels_val.tsv.gz", [("u1", 30, 1), ("u5", 31, 0)])
    data = douban3(files)
    data["sources"][1]["files"] = {"movie": "movie_labels_val.tsv.gz"}
    with pytest.raises(DataError) as err:
        read(files, data)
    message = str(err.value)
    assert "user ids are integers in data.sources.0 'douban'" in message
    assert f"(e.g. 1) but text in data.sources.1 'movie' ({files}/movie/" in message
    assert "(e.g. 'u1')" in message and "make the user ids one type" in message


def test_unknown_keys_in_a_source_list_the_accepted_keys(files):
    data = douban3(files)
    data["sources"][1]["colums"] = data["sources"][1].pop("columns")
    assert config_error(files, data).startswith(
        "data.sources.1: unknown key 'colums' (did you mean 'columns'?); accepted: format, "
        "path, domains, files, columns, header,")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(path="x"),
     ("data: path is a key of each source of format 'multi' (data.sources.N.path), not of the "
      "multi section")),
    (lambda d: d["sources"].pop(), ("data.sources: format 'multi' combines two or more sources, "
                                    "got 1")),
    (lambda d: d["sources"][0].update(format="multi"),
     "data.sources.0: sources do not nest; list its sources in data.sources"),
    (lambda d: d["sources"][1]["columns"].update(item="1"),
     ("data.sources.1.columns: header: false needs the 0-based position of item (e.g. columns: "
      "{user: 0, item: 1, rating: 2})")),
    (lambda d: d["sources"][1]["columns"].update(usr=0),
     ("data.sources.1.columns: unknown column role 'usr' (did you mean 'user'?); accepted: "
      "user, item, rating, timestamp, domain")),
    (lambda d: d["sources"][0].update(files={"book": ["a.tsv", "b.tsv"]}),
     ("data.sources.0.files: only format 'table' reads a domain from a list of files (book); "
      "give one file per domain")),
    (lambda d: d["sources"][0].update(header=False),
     ("data.sources.0.header: only format 'table' reads files without a header; format "
      "'douban' knows its files' layout")),
    (lambda d: d.update(format="douban"),
     "data.sources: only format 'multi' combines sources; format 'douban' reads one"),
])
def test_multi_section_errors_name_the_key(files, change, message):
    data = douban3(files)
    change(data)
    assert config_error(files, data) == message


def test_table_positions_need_header_false(files):
    data = douban3(files)
    data["sources"][1]["header"] = True
    assert config_error(files, data) == (
        "data.sources.1.columns: user, item, rating given as a position; 0-based positions are "
        "for files without a header (header: false), else name the header's column")


def test_the_fingerprint_follows_the_sources_and_their_options(files):
    def digest(data: dict[str, Any]) -> str:
        (config,) = load_configs(run_config(files, data))
        return fingerprint(config, {}, 0)

    base = douban3(files)
    other = copy.deepcopy(base)
    other["sources"][1]["duplicates"] = "last"
    assert digest(base) != digest(other)
    quiet = copy.deepcopy(base)
    quiet["sources"][1]["mixed_ids"] = "error"  # decides refusal only
    assert digest(base) == digest(quiet)


@pytest.mark.filterwarnings("ignore::cdrec.data.DataWarning")  # the repeat: tested above
def test_combine_sources_directly(files):
    movie = read_table({"movie": [files / "movie" / "movie_labels_val.tsv.gz",
                                  files / "movie" / "movie_labels_test.tsv.gz"]},
                       header=False, user=0, item=1, rating=2, rating_scale=(0, 1),
                       duplicates="first")
    from cdrec.data import read_douban

    with pytest.warns(DataWarning, match="shares no user id with the other sources"):
        lonely = combine_sources([read_douban(files / "douban"), read_table(
            {"x": gz(files / "x.tsv.gz", [(99, 1, 1)])}, header=False, user=0, item=1, rating=2,
            rating_scale=None)])
    assert lonely.n_users == 5
    with pytest.raises(DataError, match="domain 'movie' is given by two sources"):
        combine_sources([movie, movie])
    both = combine_sources([read_douban(files / "douban"), movie])
    assert both.name == "douban+movie" and both.n_users == 5
    # given_test rows move to the combined user index as the interactions do.
    assert np.array_equal(both.user_ids[both["movie"].interactions.user.numpy()],
                          movie.user_ids[movie["movie"].interactions.user.numpy()])


@pytest.mark.filterwarnings("ignore::cdrec.data.DataWarning")  # the repeat: tested above
def test_a_douban3_config_runs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)

    def rows(n_users: int, n_items: int, label: bool) -> list[tuple[int, int, int]]:
        out = []
        for u in range(1, n_users + 1):
            for i in rng.choice(n_items, 6, replace=False):
                out.append((u, int(i) + 1, int(rng.integers(0, 2)) if label
                            else int(rng.integers(1, 6))))
        return out

    gz(tmp_path / "douban" / "book_ratings.tsv.gz", rows(12, 30, False))
    gz(tmp_path / "douban" / "music_ratings.tsv.gz", rows(10, 30, False))
    movie = rows(14, 30, True)
    gz(tmp_path / "movie" / "movie_labels_val.tsv.gz", movie[::2])
    gz(tmp_path / "movie" / "movie_labels_test.tsv.gz", movie[1::2] + movie[:4])  # 2 repeats
    path = run_config(tmp_path, douban3(tmp_path), output_dir=str(tmp_path / "runs"),
                      progress=False)
    res = CliRunner().invoke(app, ["run", str(path), "--quiet"])
    assert res.exit_code == 0, res.output
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert {"book/NDCG@1", "music/NDCG@1", "movie/NDCG@1"} <= set(results["Popularity"])


@pytest.mark.skipif(not (SHARED_DATA / "douban_movie_partial").exists()
                    or not (SHARED_DATA / "douban").exists(),
                    reason="shared Douban data not found")
def test_real_douban_three_domains(tmp_path):
    data_section = douban3(SHARED_DATA)
    data_section["sources"][1]["path"] = str(SHARED_DATA / "douban_movie_partial")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read(tmp_path, data_section)
    assert list(data.domains) == ["book", "music", "movie"]
    expected = {"book": (96_041, 2_110, 6_777), "music": (69_709, 1_672, 5_567),
                "movie": (223_711, 2_647, 9_543)}
    for dom, (rows, users, items) in expected.items():
        assert len(data[dom].interactions) == rows
        assert len(data[dom].users()) == users
        assert data[dom].n_items == items
    users = [set(data[dom].users().tolist()) for dom in data.domains]
    assert len(users[0] & users[1] & users[2]) == 1_546
    assert len(users[0] & users[2]) == 2_073 and len(users[1] & users[2]) == 1_646
    assert len(users[0] & users[1]) == 1_566
    assert min(data.user_ids.tolist()) >= 1 and max(data.user_ids.tolist()) <= 2718
    # Every distinct pair stays, label 0 included (README: 1,492 pairs in both files, 2,973
    # duplicate rows in all, so 1,481 more repeat within a file).
    values, counts = torch.unique(data["movie"].interactions.rating, return_counts=True)
    assert values.tolist() == [0.0, 1.0] and counts.tolist() == [87_636, 136_075]
    dropped = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert sum(int(re.search(r"(\d+) duplicate", m).group(1)) for m in dropped) == 2_973
    assert any("1492 duplicate" in m and "files " in m for m in dropped)
