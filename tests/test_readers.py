"""Readers: fixture files built here, the shipped sample, and the shared real data (if present)."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import triples

from cdrec.data import (
    DataError,
    DataWarning,
    MissingFileError,
    load_sample,
    read_amazon_implicit_pair,
    read_amazon_json,
    read_amazon_ratings_csv,
    read_amazon_reviews,
    read_douban,
    read_table,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path



# ------------------------------------------------------------------------------------------
# read_table
# ------------------------------------------------------------------------------------------

def test_read_table_csv_with_domain_column(tmp_path):
    path = write(tmp_path / "all.csv",
                 "uid,iid,stars,dom\n30,b,4,books\n10,a,5,books\n20,x,3,music\n10,y,1,music\n")
    data = read_table(path, user="uid", item="iid", rating="stars", domain="dom")
    assert list(data.domains) == ["books", "music"]
    assert data.user_ids.tolist() == [10, 20, 30]  # sorted original ids, numeric
    assert data["books"].item_ids.tolist() == ["a", "b"]
    assert data["books"].interactions.user.tolist() == [2, 0]  # file order kept
    assert data["books"].interactions.item.tolist() == [1, 0]
    assert data["books"].rating_scale == (1.0, 5.0)
    assert triples(data, "music") == [(10, "y", 1.0), (20, "x", 3.0)]
    assert data["music"].interactions.rating.dtype == torch.float32
    assert data["music"].interactions.user.dtype == torch.int64


def test_read_table_dict_of_files_tsv_gz_and_parquet(tmp_path):
    a = write(tmp_path / "a.tsv.gz", "user\titem\trating\n7\t100\t2\n3\t101\t5\n", gz=True)
    b = tmp_path / "b.parquet"
    pd.DataFrame({"user": [3, 9], "item": [5, 6], "rating": [4.0, 1.0]}).to_parquet(b)
    data = read_table({"a": a, "b": b})
    # ids read as text from the TSV and as int64 from Parquet end up in one int space
    assert data.user_ids.tolist() == [3, 7, 9]
    assert triples(data, "a") == [(3, 101, 5.0), (7, 100, 2.0)]
    assert triples(data, "b") == [(3, 5, 4.0), (9, 6, 1.0)]
    assert data.overlap_users("a", "b").tolist() == [0]


def test_read_table_text_ids_implicit_and_timestamps(tmp_path):
    path = write(tmp_path / "log.csv",
                 "who,what,when\nu2,i1,2020-01-01\nu1,i1,1970-01-02T00:00:00\n")
    data = read_table(path, user="who", item="what", rating=None, timestamp="when")
    dom = data["log"]
    assert dom.rating_scale is None and dom.implicit
    assert dom.interactions.rating.tolist() == [1.0, 1.0]
    assert data.user_ids.tolist() == ["u1", "u2"]
    assert dom.interactions.timestamp.tolist() == [1577836800, 86400]


def test_read_table_headerless_positions_and_numeric_timestamps(tmp_path):
    path = write(tmp_path / "r.txt", "1;5;3;1000\n2;5;4;2000\n")
    data = read_table(path, header=False, sep=";", user=0, item=1, rating=2, timestamp=3)
    assert triples(data, "r") == [(1, 5, 3.0), (2, 5, 4.0)]
    assert data["r"].interactions.timestamp.tolist() == [1000, 2000]


def test_read_table_leading_zero_ids_stay_text(tmp_path):
    path = write(tmp_path / "z.csv", "user,item,rating\n007,1,3\n7,1,4\n")
    with pytest.warns(DataWarning, match="user id '007' is not an integer"):  # mixed kinds
        data = read_table(path)
    assert data.user_ids.tolist() == ["007", "7"]  # two different users


def test_read_table_unknown_suffix_needs_sep(tmp_path):
    path = write(tmp_path / "r.dat", "user,item,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"r\.dat.*sep="):
        read_table(path)


# ------------------------------------------------------------------------------------------
# read_douban, read_amazon_implicit_pair, read_amazon_ratings_csv, read_amazon_json
# ------------------------------------------------------------------------------------------

def test_read_douban_fixture_gz_and_plain(tmp_path):
    write(tmp_path / "book_ratings.tsv.gz", "5\t10\t4\n2\t11\t5\n5\t11\t3\n", gz=True)
    write(tmp_path / "music_ratings.tsv", "9\t10\t1\n2\t12\t2\n")  # plain .tsv fallback
    data = read_douban(tmp_path)
    assert data.name == "douban"
    assert data.user_ids.tolist() == [2, 5, 9]
    assert data["book"].item_ids.tolist() == [10, 11]
    assert data["music"].item_ids.tolist() == [10, 12]  # item ids are per domain
    assert triples(data, "book") == [(2, 11, 5.0), (5, 10, 4.0), (5, 11, 3.0)]
    assert data.overlap_users("book", "music").tolist() == [0]
    assert data["book"].rating_scale == (1.0, 5.0)


def make_pair(root: Path, test_item: str = "21") -> Path:
    (root / "x_y").mkdir(parents=True)
    (root / "y_x").mkdir()
    write(root / "x_y" / "train.txt.gz", "0\t20\t1\n1\t21\t1\n1\t20\t1\n", gz=True)
    write(root / "x_y" / "test.txt.gz", f"0\t{test_item}\t1\n", gz=True)
    write(root / "x_y" / "test_original.txt.gz", "0\t99\t1\n1\t21\t1\n", gz=True)
    write(root / "y_x" / "train.txt.gz", "0\t5\t1\n2\t6\t1\n", gz=True)
    write(root / "y_x" / "test.txt.gz", "2\t5\t1\n", gz=True)
    write(root / "y_x" / "test_original.txt.gz", "2\t5\t1\n0\t7\t1\n", gz=True)
    return root


def test_read_amazon_implicit_pair_fixture(tmp_path):
    root = make_pair(tmp_path)
    data = read_amazon_implicit_pair(root, "x", "y")
    assert list(data.domains) == ["x", "y"]
    assert data.user_ids.tolist() == [0, 1, 2]
    x, y = data["x"], data["y"]
    assert x.implicit and y.implicit
    assert x.item_ids.tolist() == [20, 21]
    assert x.given_test.user.tolist() == [0] and x.given_test.item.tolist() == [1]
    assert y.given_test.user.tolist() == [2] and y.given_test.item.tolist() == [0]
    assert data.overlap_users("x", "y").tolist() == [0]


def test_read_amazon_implicit_pair_test_original_extends_items(tmp_path):
    root = make_pair(tmp_path)
    data = read_amazon_implicit_pair(root, "x", "y", test_file="test_original")
    # training items keep their indices; test-only items are appended after them
    assert data["x"].item_ids.tolist() == [20, 21, 99]
    assert data["x"].given_test.item.tolist() == [2, 1]
    assert data["y"].item_ids.tolist() == [5, 6, 7]
    assert len(read_amazon_implicit_pair(root, "x", "y", test_file=None)["x"].interactions) == 3


def test_read_amazon_implicit_pair_unseen_test_item_is_an_error(tmp_path):
    root = make_pair(tmp_path, test_item="55")
    with pytest.raises(DataError) as err:
        read_amazon_implicit_pair(root, "x", "y")
    msg = str(err.value)
    assert "test.txt.gz" in msg and "row 1" in msg and "item" in msg and "55" in msg
    assert "train.txt.gz" in msg


@pytest.mark.parametrize("gz", [True, False])
def test_read_amazon_ratings_csv(tmp_path, gz):
    name = "ratings_A.csv.gz" if gz else "ratings_A.csv"
    a = write(tmp_path / name, "AX1,B001,5.0,1400000000\nAX2,0001,3.0,1300000000\n", gz=gz)
    b = write(tmp_path / "b.csv", "AX2,C9,1.0,1200000000\n")
    data = read_amazon_ratings_csv({"A": a, "B": b})
    assert data.user_ids.tolist() == ["AX1", "AX2"]
    assert data["A"].item_ids.tolist() == ["0001", "B001"]  # Amazon ids stay text
    assert data["A"].interactions.timestamp.tolist() == [1400000000, 1300000000]
    assert data.overlap_users("A", "B").tolist() == [1]


def json_line(user, item, rating, text, ts=1000):
    return (f'{{"reviewerID": "{user}", "asin": "{item}", "overall": {rating}, '
            f'"reviewText": "{text}", "unixReviewTime": {ts}}}\n')


def test_read_amazon_json_gz_with_text(tmp_path):
    lines = (json_line("A1", "I1", 5.0, "great") + json_line("A2", "I1", 2.0, "meh")
             + json_line("A1", "I1", 4.0, "changed my mind", ts=2000)
             + '{"reviewerID": "A3", "asin": "I2", "overall": 3.0, "unixReviewTime": 5}\n')
    path = write(tmp_path / "reviews_X_5.json.gz", lines, gz=True)
    with pytest.warns(DataWarning, match="1 duplicate"):
        data, texts = read_amazon_json({"X": path}, keep_text=True)
    assert triples(data, "X") == [("A1", "I1", 4.0), ("A2", "I1", 2.0), ("A3", "I2", 3.0)]
    text = texts["X"]
    assert isinstance(text, pd.Series) and len(text) == len(data["X"].interactions)
    users = data.user_ids[data["X"].interactions.user.numpy()]
    assert dict(zip(users.tolist(), text.tolist(), strict=True)) == {
        "A1": "changed my mind", "A2": "meh", "A3": ""}
    assert data["X"].interactions.timestamp.tolist() == [1000, 2000, 5]
    with pytest.warns(DataWarning):
        assert isinstance(read_amazon_json({"X": path}), type(data))  # no tuple without text


def test_read_amazon_json_plain_without_text(tmp_path):
    path = write(tmp_path / "r.json", json_line("A1", "I1", 5.0, "x"))
    data = read_amazon_json({"X": path})
    assert len(data["X"].interactions) == 1 and data["X"].rating_scale == (1.0, 5.0)


def test_read_amazon_reviews_csv_with_quoted_text(tmp_path):
    path = write(tmp_path / "mi.csv",
                 'reviewerID,asin,reviewText,overall,unixReviewTime\n'
                 'A1,I1,"good, really ""good""\nsecond line",5.0,10\n'
                 'A2,I1,,3.0,20\n')
    data, texts = read_amazon_reviews({"MI": path}, keep_text=True)
    assert len(data["MI"].interactions) == 2
    assert texts["MI"].tolist() == ['good, really "good"\nsecond line', ""]
    with pytest.raises(DataError, match="JSON lines"):
        read_amazon_json({"MI": path})


# ------------------------------------------------------------------------------------------
# Bad input: every error names the file, the row and the column
# ------------------------------------------------------------------------------------------

def assert_where(err: pytest.ExceptionInfo, file: str, row: int | None, column: str | None):
    msg = str(err.value)
    assert file in msg, msg
    if row is not None:
        assert err.value.row == row and f"row {row}" in msg, msg
        assert "counted from 1" in msg, msg  # the row convention is stated
    if column is not None:
        assert err.value.column == column and repr(column) in msg, msg


def test_missing_column(tmp_path):
    path = write(tmp_path / "m.csv", "user,product,rating\n1,2,3\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_where(err, "m.csv", None, "item")
    assert "'product'" in str(err.value)  # lists what the file has


def test_missing_field_headerless(tmp_path):
    write(tmp_path / "book_ratings.tsv", "1\t2\n")
    write(tmp_path / "music_ratings.tsv", "1\t2\t3\n")
    with pytest.raises(DataError) as err:
        read_douban(tmp_path)
    assert "book_ratings.tsv" in str(err.value) and "rating" in str(err.value)


def test_non_numeric_rating(tmp_path):
    path = write(tmp_path / "n.csv", "user,item,rating\n1,2,3\n1,3,4\n2,3,great\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_where(err, "n.csv", 3, "rating")
    assert "'great'" in str(err.value) and "header line not counted" in str(err.value)


def test_non_numeric_rating_headerless_counts_lines(tmp_path):
    write(tmp_path / "book_ratings.tsv.gz", "1\t2\t3\n1\t3\tx\n", gz=True)
    write(tmp_path / "music_ratings.tsv.gz", "1\t2\t3\n", gz=True)
    with pytest.raises(DataError) as err:
        read_douban(tmp_path)
    assert_where(err, "book_ratings.tsv.gz", 2, "field 3 (rating)")
    assert "first line of the file" in str(err.value)


def test_nan_rating(tmp_path):
    path = write(tmp_path / "nan.tsv", "user\titem\trating\n1\t2\t3\n1\t3\tNaN\n2\t3\t\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_where(err, "nan.tsv", 2, "rating")
    assert "NaN" in str(err.value) and "2 such rows" in str(err.value)


def test_nan_rating_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({"u": [1, 2], "i": [1, 1], "r": [3.0, np.nan]}).to_parquet(path)
    with pytest.raises(DataError) as err:
        read_table(path, user="u", item="i", rating="r")
    assert_where(err, "p.parquet", 2, "r")


def test_rating_out_of_scale(tmp_path):
    path = write(tmp_path / "s.csv", "user,item,rating\n1,2,3\n2,2,0\n3,2,11\n")
    with pytest.raises(DataError) as err:
        read_table(path, rating_scale=(1, 10))
    assert_where(err, "s.csv", 2, "rating")
    assert "1..10" in str(err.value) and "2 such rows" in str(err.value)


def test_rating_out_of_scale_json(tmp_path):
    path = write(tmp_path / "r.json", json_line("A", "I", 5.0, "") + "\n"
                 + json_line("B", "I", 6.0, ""))
    with pytest.raises(DataError) as err:
        read_amazon_json({"X": path})
    assert_where(err, "r.json", 3, "overall")  # the blank line 2 is counted


def test_implicit_values_must_be_one(tmp_path):
    root = make_pair(tmp_path)
    write(root / "y_x" / "train.txt.gz", "0\t5\t1\n2\t6\t0\n", gz=True)
    with pytest.raises(DataError) as err:
        read_amazon_implicit_pair(root, "x", "y")
    assert_where(err, "train.txt.gz", 2, "field 3 (rating)")


def test_missing_user_id(tmp_path):
    path = write(tmp_path / "u.csv", "user,item,rating\n1,2,3\n,2,3\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_where(err, "u.csv", 2, "user")


def test_empty_domain_file(tmp_path):
    a = write(tmp_path / "a.csv", "user,item,rating\n1,2,3\n")
    b = write(tmp_path / "b.csv", "user,item,rating\n")
    with pytest.raises(DataError) as err:
        read_table({"a": a, "b": b})
    assert_where(err, "b.csv", None, None)
    assert "'b'" in str(err.value) and "no data rows" in str(err.value)


def test_zero_byte_file(tmp_path):
    write(tmp_path / "book_ratings.tsv", "")
    write(tmp_path / "music_ratings.tsv", "1\t2\t3\n")
    with pytest.raises(DataError, match=r"book_ratings\.tsv.*empty"):
        read_douban(tmp_path)


def test_duplicate_pairs_keep_last_with_warning(tmp_path):
    path = write(tmp_path / "d.csv",
                 "user,item,rating\n1,10,1\n2,10,2\n1,10,3\n1,11,4\n1,10,5\n2,10,4\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read_table(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "d.csv" in messages[0] and "3 duplicate" in messages[0] and "row 1" in messages[0]
    assert triples(data, "d") == [(1, 10, 5.0), (1, 11, 4.0), (2, 10, 4.0)]


def test_corrupt_gzip_truncated(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"user,item,rating\n" + b"1,2,3\n" * 5000)[:-40])
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_where(err, "t.csv.gz", None, None)
    assert "gzip" in str(err.value)


def test_corrupt_gzip_garbage(tmp_path):
    path = tmp_path / "book_ratings.tsv.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    write(tmp_path / "music_ratings.tsv", "1\t2\t3\n")
    with pytest.raises(DataError, match=r"book_ratings\.tsv\.gz.*gzip"):
        read_douban(tmp_path)


def test_not_gzip_although_named_gz(tmp_path):
    path = write(tmp_path / "plain.csv.gz", "user,item,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"plain\.csv\.gz.*not a gzip file"):
        read_table(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.csv"):
        read_table(tmp_path / "nothere.csv")
    with pytest.raises(MissingFileError, match=r"music_ratings\.tsv"):
        write(tmp_path / "book_ratings.tsv", "1\t2\t3\n")
        read_douban(tmp_path)
    with pytest.raises(DataError):
        read_amazon_implicit_pair(tmp_path, "x", "y")


def test_malformed_json_line(tmp_path):
    path = write(tmp_path / "bad.json.gz", json_line("A", "I", 5.0, "") + '{"reviewerID": \n',
                 gz=True)
    with pytest.raises(DataError) as err:
        read_amazon_json({"X": path})
    assert_where(err, "bad.json.gz", 2, None)


def test_extra_fields_in_a_line(tmp_path):
    path = write(tmp_path / "x.csv", "user,item,rating\n1,2,3\n1,3,4,9\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_where(err, "x.csv", 2, None)


# ------------------------------------------------------------------------------------------
# Errors that point home: bad timestamps, mixed id types
# ------------------------------------------------------------------------------------------

def stamped_csv(path: Path, stamps: list[str]) -> Path:
    """A table whose data row i (1-based, header not counted) has user i and timestamp i."""
    rows = [f"{i},{i % 3},3,{stamp}" for i, stamp in enumerate(stamps, 1)]
    return write(path, "user,item,rating,time\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("kind", ["seconds", "fractional seconds", "dates"])
def test_a_bad_timestamp_is_named_by_its_row_and_value(tmp_path, kind):
    good = {"seconds": lambda i: str(1_600_000_000 + i),
            "fractional seconds": lambda i: f"{1_600_000_000 + i}.5",
            "dates": lambda i: f"2020-01-{i:02d}"}[kind]
    path = stamped_csv(tmp_path / "t.csv",
                       [good(i) if i != 16 else "yesterday" for i in range(1, 21)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pandas warning may leak out of a reader
        with pytest.raises(DataError) as err:
            read_table(path, timestamp="time")
    assert_where(err, "t.csv", 16, "time")
    assert "'yesterday' is neither a number nor a date" in str(err.value)
    assert "header line not counted" in str(err.value) and "such rows" not in str(err.value)


def test_a_bad_timestamp_in_json_lines_counts_lines(tmp_path):
    lines = [json_line(f"U{i}", "I", 5.0, "", ts=1000 + i) for i in range(1, 6)]
    lines[3] = lines[3].replace('"unixReviewTime": 1004', '"unixReviewTime": "soon"')
    path = write(tmp_path / "r.json", "".join(lines))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as err:
            read_amazon_json({"X": path})
    assert_where(err, "r.json", 4, "unixReviewTime")
    assert "'soon'" in str(err.value) and "first line of the file" in str(err.value)


@pytest.mark.parametrize(("stamps", "row", "message"), [
    ([str(1_600_000_000 + i) if i != 7 else "2020-01-07" for i in range(1, 21)], 7,
     "'2020-01-07' is a date but 19 of the 20 values are epoch seconds"),
    ([f"2020-01-{i:02d}" if i not in (7, 9) else str(1_600_000_000 + i) for i in range(1, 21)],
     7, "'1600000007' is a number but 18 of the 20 values are dates"),
    ([f"2020-01-{i:02d}" if i != 5 else "today" for i in range(1, 21)], 5, "'today'"),
    ([f"2020-01-{i:02d}" if i != 12 else "" for i in range(1, 21)], 12, "timestamp is missing"),
])
def test_timestamps_of_two_kinds_or_none_are_named(tmp_path, stamps, row, message):
    path = stamped_csv(tmp_path / "k.csv", stamps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as err:
            read_table(path, timestamp="time")
    assert_where(err, "k.csv", row, "time")
    assert message in str(err.value)


def test_dates_in_several_formats_parse_without_pandas_warnings(tmp_path):
    # pandas cannot infer one format from "2020/1/1 5pm" and warns; values that do not fit an
    # inferred format are retried one by one. Neither may warn out of the reader.
    path = stamped_csv(tmp_path / "d.csv", ["2020/1/1 5pm", "2020-01-02", "01/03/2020",
                                            "Jan 4 2020 06:00"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = read_table(path, timestamp="time")
    jan1 = 1577836800
    assert data["d"].interactions.timestamp.tolist() == [
        jan1 + 17 * 3600, jan1 + 86400, jan1 + 2 * 86400, jan1 + 3 * 86400 + 6 * 3600]


def mixed_user_csv(path: Path, odd_row: int = 16, n: int = 30) -> Path:
    rows = [f"{'alice' if i == odd_row else i},{i % 4},3" for i in range(1, n + 1)]
    return write(path, "user,item,rating\n" + "\n".join(rows) + "\n")


def test_a_text_id_among_integers_warns_with_count_and_first_row(tmp_path):
    path = mixed_user_csv(tmp_path / "m.csv")
    with pytest.warns(DataWarning) as caught:
        data = read_table(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1, messages
    msg = messages[0]
    assert msg.startswith(f"file {path}, row 16, column 'user': user id 'alice' is not an "
                          "integer, but 29 of the 30 rows have integer user ids"), msg
    assert "mixed_ids='error'" in msg and "header line not counted" in msg
    assert data.user_ids.dtype == object and "alice" in data.user_ids.tolist()  # read as text


def test_mixed_ids_error_refuses_the_file(tmp_path):
    path = mixed_user_csv(tmp_path / "m.csv", odd_row=3)
    with pytest.raises(DataError) as err:
        read_table(path, mixed_ids="error")
    assert_where(err, "m.csv", 3, "user")
    assert "'alice' is not an integer, but 29 of the 30 rows" in str(err.value)
    with pytest.raises(ValueError, match="mixed_ids must be 'warn' or 'error'"):
        read_table(path, mixed_ids="ignore")  # type: ignore[arg-type]


def test_mixed_ids_across_files_name_the_file_and_headerless_field(tmp_path):
    write(tmp_path / "book_ratings.tsv", "1\t2\t3\n2\t2\t3\n4\t2\t3\n")
    write(tmp_path / "music_ratings.tsv", "1\t2\t3\n3\t2\t4\nbob\t3\t3\n")
    with pytest.raises(DataError) as err:
        read_douban(tmp_path, mixed_ids="error")
    assert_where(err, "music_ratings.tsv", 3, "field 1 (user)")
    assert "first line of the file" in str(err.value)
    # Item ids are per domain: a text item among integer items is named too.
    write(tmp_path / "music_ratings.tsv", "1\t2\t3\n3\tx9\t4\n2\t3\t3\n")
    with pytest.raises(DataError) as err:
        read_douban(tmp_path, mixed_ids="error")
    assert_where(err, "music_ratings.tsv", 2, "field 2 (item)")
    assert "item id 'x9'" in str(err.value)


def test_text_ids_with_a_few_all_digit_ones_are_text_data(tmp_path):
    path = write(tmp_path / "a.csv", "user,item,rating\nA1,B0001,3\nA2,0439023483,4\n"
                                    "A3,1234567890,5\nA4,B0002,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ASIN-like items: mostly text, no warning
        data = read_table(path, mixed_ids="error")
    assert "1234567890" in data["a"].item_ids.tolist()


# ------------------------------------------------------------------------------------------
# Shipped sample and shared real data
# ------------------------------------------------------------------------------------------

def test_shipped_douban_sample():
    data = load_sample("douban")
    assert len(data["book"].interactions) == 36_852
    assert len(data["music"].interactions) == 25_258
    book = set(data["book"].users().tolist())
    music = set(data["music"].users().tolist())
    assert len(book | music) == data.n_users == 700
    assert len(book & music) == 600


def test_shipped_amazon_sample():
    data = load_sample("amazon_implicit")
    assert data.n_users == 3_325
    assert len(data["phone"].interactions) == 50_407
    assert len(data["electronic"].interactions) == 115_554
    assert len(data["phone"].given_test) == 2_559
    assert len(data["electronic"].given_test) == 2_560


def test_real_douban_counts():
    data = read_douban(shared("douban"))
    expected = {"book": (96_041, 2_110, 6_777, [1605, 4207, 21018, 38975, 30236]),
                "music": (69_709, 1_672, 5_567, [1478, 3215, 13031, 24805, 27180])}
    for dom, (rows, users, items, counts) in expected.items():
        inter = data[dom].interactions
        assert len(inter) == rows
        assert len(data[dom].users()) == users
        assert data[dom].n_items == items
        values, found = torch.unique(inter.rating, return_counts=True)
        assert values.tolist() == [1, 2, 3, 4, 5] and found.tolist() == counts
    book = set(data.user_ids[data["book"].interactions.user.numpy()].tolist())
    music = set(data.user_ids[data["music"].interactions.user.numpy()].tolist())
    assert len(book & music) == 1_566
    assert min(book | music) >= 1 and max(book | music) <= 2718
    assert len(data.overlap_users("book", "music")) == 1_566


PAIRS = {  # folder: (train rows, users, items, test rows) from the shared README
    "sport_cloth": (92_612, 9_928, 30_796, 8_326), "cloth_sport": (87_829, 9_928, 39_008, 7_540),
    "phone_electronic": (50_407, 3_325, 17_709, 2_559),
    "electronic_phone": (115_554, 3_325, 38_706, 2_560),
    "sport_phone": (50_558, 4_998, 20_845, 3_698), "phone_sport": (42_446, 4_998, 13_655, 3_999),
    "cloth_electronic": (121_083, 15_761, 48_781, 12_526),
    "electronic_cloth": (210_865, 15_761, 51_447, 13_824),
}


@pytest.mark.parametrize("pair", ["sport_cloth", "phone_electronic", "sport_phone",
                                  "cloth_electronic"])
def test_real_amazon_implicit_counts(pair):
    root = shared("amazon_implicit")
    a, b = pair.split("_")
    data = read_amazon_implicit_pair(root, a, b)
    for dom, folder in ((a, f"{a}_{b}"), (b, f"{b}_{a}")):
        rows, users, items, test_rows = PAIRS[folder]
        assert len(data[dom].interactions) == rows
        assert len(data[dom].users()) == users
        assert data[dom].n_items == items
        assert len(data[dom].given_test) == test_rows
        assert data[dom].implicit
    assert data.n_users == PAIRS[f"{a}_{b}"][1]


def test_real_amazon_implicit_test_original():
    data = read_amazon_implicit_pair(shared("amazon_implicit"), "phone", "electronic",
                                     test_file="test_original")
    for dom in ("phone", "electronic"):
        assert len(data[dom].given_test) == 3_325  # one held-out row per user
        assert int(data[dom].given_test.item.max()) < data[dom].n_items


def test_real_amazon_reviews():
    root = shared("amazon_reviews")
    data, texts = read_amazon_reviews(
        {"instruments": root / "Musical_instruments_reviews.csv.gz",
         "music": root / "reviews_Digital_Music_5.head6908.json.gz"}, keep_text=True)
    for dom, (rows, users, items, nonempty) in {"instruments": (10_261, 1_429, 900, 10_254),
                                               "music": (6_908, 2_490, 382, 6_907)}.items():
        assert len(data[dom].interactions) == rows
        assert len(data[dom].users()) == users
        assert data[dom].n_items == items
        assert int((texts[dom] != "").sum()) == nonempty
    assert len(data.overlap_users("instruments", "music")) == 11
    first = data["instruments"].interactions
    assert data.user_ids[int(first.user[0])] == "A2IBPI20UZIR0U"
    assert data["instruments"].item_ids[int(first.item[0])] == "1384719342"
    assert int(first.timestamp[0]) == 1393545600
