"""Shipped samples and dataset discovery."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pytest

from cdrec.data import find_datasets, load_sample, sample_path, shipped_datasets

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()))


def test_sample_paths_exist_and_are_small():
    total = 0
    for name in ("douban", "amazon_implicit"):
        path = sample_path(name)
        assert path.is_dir()
        total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert total < 3 * 1024 * 1024
    assert (sample_path("douban").parent / "PROVENANCE.md").is_file()
    with pytest.raises(KeyError, match="douban"):
        sample_path("movielens")


def test_provenance_checksums_match_the_shipped_files():
    root = sample_path("douban").parent
    text = (root / "PROVENANCE.md").read_text(encoding="utf-8")
    row = r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$"
    listed = re.findall(row, text, flags=re.MULTILINE)
    assert len(listed) == 8
    for rel, digest in listed:
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel
    for needle in ("fengzhu1/GA-DTCDR", "cjx96/DisenCDR", "GPL-3.0", "MIT", "IJCAI 2020",
                   "SIGIR 2022", "WWW 2016", "default_rng"):
        assert needle in text


def test_shipped_datasets():
    entries = {e["name"]: e for e in shipped_datasets()}
    assert set(entries) == {"douban", "amazon_implicit"}
    assert entries["douban"]["rows"] == {"book": 36_852, "music": 25_258}
    assert entries["amazon_implicit"]["rows"] == {"phone": 50_407, "electronic": 115_554}
    assert entries["amazon_implicit"]["domains"] == ["phone", "electronic"]
    assert all(e["shipped"] and Path(e["path"]).is_dir() for e in entries.values())
    assert "phone_electronic/test_original.txt.gz" in entries["amazon_implicit"]["files"]
    assert list(load_sample("douban").domains) == entries["douban"]["domains"]


def test_find_datasets_recognises_each_kind(tmp_path):
    gz(tmp_path / "dou" / "book_ratings.tsv.gz", "1\t2\t3\n1\t3\t4\n")
    gz(tmp_path / "dou" / "music_ratings.tsv.gz", "1\t2\t3\n")
    for folder in ("a_b", "b_a"):
        gz(tmp_path / "pairs" / folder / "train.txt.gz", "0\t1\t1\n0\t2\t1\n0\t3\t1\n")
        gz(tmp_path / "pairs" / folder / "test.txt.gz", "0\t1\t1\n")
    gz(tmp_path / "pairs" / "c_d" / "train.txt.gz", "0\t1\t1\n")  # no d_c: not a pair
    gz(tmp_path / "rev" / "reviews_X_5.json.gz",
       '{"reviewerID": "A", "asin": "B", "overall": 5.0, "unixReviewTime": 1}\n')
    (tmp_path / "rev" / "mi.csv").write_text(
        'reviewerID,asin,overall,reviewText\nA,B,5.0,"two\nlines"\nC,B,4.0,x\n')
    (tmp_path / "rev" / "ratings_Y.csv").write_text("A,B,5.0,1400000000\n")
    (tmp_path / "rev" / "notes.csv").write_text("x,y\n1,2\n")
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb" / "DoubanBook.inter").write_text(
        "user_id:token\titem_id:token\trating:float\nu1\ti1\t5\nu2\ti1\t3\n")
    (tmp_path / "rb" / "untyped.inter").write_text("user\titem\nu1\ti1\n")
    found = {e["name"]: e for e in find_datasets(tmp_path)}
    assert set(found) == {"dou", "pairs/a_b", "rev/reviews_X_5", "rev/mi", "rev/ratings_Y",
                          "rb/DoubanBook"}
    assert found["rb/DoubanBook"]["kind"] == "recbole"
    assert found["rb/DoubanBook"]["rows"] == {"DoubanBook": 2}
    assert found["dou"]["kind"] == "douban" and found["dou"]["rows"] == {"book": 2, "music": 1}
    pair = found["pairs/a_b"]
    assert pair["kind"] == "amazon_implicit_pair" and pair["domains"] == ["a", "b"]
    assert pair["rows"] == {"a": 3, "b": 3}
    assert "a_b/test.txt.gz" in pair["files"]
    assert found["rev/reviews_X_5"]["kind"] == "amazon_reviews_json"
    assert found["rev/mi"]["kind"] == "amazon_reviews_csv"
    assert found["rev/mi"]["rows"] == {"mi": 2}  # quoted text spans lines; rows are records
    assert found["rev/ratings_Y"]["kind"] == "amazon_ratings_csv"
    for entry in found.values():
        assert {"name", "kind", "path", "files", "domains", "rows", "reader"} <= set(entry)


def test_find_datasets_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_datasets(tmp_path / "none")


def test_find_datasets_on_shared_data():
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found: {SHARED}")
    found = {e["name"]: e for e in find_datasets(SHARED)}
    assert found["douban"]["rows"] == {"book": 96_041, "music": 69_709}
    pairs = {n for n, e in found.items() if e["kind"] == "amazon_implicit_pair"}
    assert pairs == {"amazon_implicit/cloth_electronic", "amazon_implicit/cloth_sport",
                     "amazon_implicit/electronic_phone", "amazon_implicit/phone_sport"}
    assert found["amazon_implicit/electronic_phone"]["rows"] == {"electronic": 115_554,
                                                                 "phone": 50_407}
    reviews = found["amazon_reviews/Musical_instruments_reviews"]
    assert reviews["kind"] == "amazon_reviews_csv"
    assert reviews["rows"] == {"Musical_instruments_reviews": 10_261}
    music = found["amazon_reviews/reviews_Digital_Music_5"]
    assert music["kind"] == "amazon_reviews_json" and list(music["rows"].values()) == [6_908]
