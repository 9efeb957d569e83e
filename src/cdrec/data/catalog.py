"""Which datasets are at hand: the samples shipped with cdrec, and datasets found in a folder.

Backs ``cdrec datasets [--data-dir DIR]``. Each dataset is described by a plain dict:
``name``, ``kind``, ``path``, ``files`` (relative to ``path``), ``domains``, ``rows`` (data rows
per domain, or ``None`` when counting would be costly) and ``reader`` (the call that loads it).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

from cdrec.data.dataset import CrossDomainData
from cdrec.data.readers import read_amazon_implicit_pair, read_douban

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
SAMPLES = {
    "douban": "Douban Book + Music, 700 users (600 in both domains), explicit ratings 1..5",
    "amazon_implicit": "Amazon Phone-Electronic pair (DisenCDR), implicit, leave-one-out tests",
}
# Domain order of each sample as ``load_sample`` reads it.
SAMPLE_DOMAINS = {"douban": ["book", "music"], "amazon_implicit": ["phone", "electronic"]}
# Count rows only of files up to this size (compressed bytes); bigger files get rows=None.
COUNT_LIMIT = 64 * 1024 * 1024
CSV_COUNT_LIMIT = 16 * 1024 * 1024
MAX_DEPTH = 3

_DOUBAN_FILE = re.compile(r"^(?P<domain>[A-Za-z0-9]+)_ratings\.tsv(?:\.gz)?$")
_PAIR_DIR = re.compile(r"^(?P<a>[A-Za-z0-9]+)_(?P<b>[A-Za-z0-9]+)$")
_TRAIN = ("train.txt.gz", "train.txt")


def sample_path(name: str) -> Path:
    """Folder of a dataset shipped with cdrec: ``"douban"`` or ``"amazon_implicit"``."""
    if name not in SAMPLES:
        raise KeyError(f"no shipped sample {name!r}; there are {sorted(SAMPLES)}")
    path = SAMPLE_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(f"shipped sample {name!r} is missing from the installation "
                                f"(expected {path})")
    return path


def load_sample(name: str, **kwargs: Any) -> CrossDomainData:
    """Read a shipped sample; ``kwargs`` go to its reader (e.g. ``test_file=``)."""
    if name == "douban":
        return read_douban(sample_path(name), **kwargs)
    if name == "amazon_implicit":
        return read_amazon_implicit_pair(sample_path(name), "phone", "electronic", **kwargs)
    raise KeyError(f"no shipped sample {name!r}; there are {sorted(SAMPLES)}")


def _count_lines(path: Path) -> int | None:
    """Non-empty lines of a (gzip'd) text file, or ``None`` if too big or unreadable."""
    try:
        if path.stat().st_size > COUNT_LIMIT:
            return None
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        count, last = 0, b"\n"
        with opener(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
        return count + (last != b"\n")
    except (OSError, EOFError, zlib.error):
        return None


def _count_csv_rows(path: Path) -> int | None:
    """Records of a CSV with a header (quoted text may span lines, so lines are not rows)."""
    try:
        if path.stat().st_size > CSV_COUNT_LIMIT:
            return None
        return len(pd.read_csv(path, usecols=[0], dtype=str))
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError):
        return None


def _first_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(path, "rb") as handle:
            return handle.readline(1 << 20).decode("utf-8", errors="replace").strip()
    except (OSError, EOFError, zlib.error):
        return None


def _entry(name: str, kind: str, path: Path, files: list[Path], domains: list[str],
           rows: dict[str, int | None] | None, reader: str) -> dict[str, Any]:
    if rows is not None and any(v is None for v in rows.values()):
        rows = None
    return {"name": name, "kind": kind, "path": str(path),
            "files": [str(f.relative_to(path)) for f in files], "domains": domains,
            "rows": rows, "reader": reader}


def _douban(directory: Path, names: list[str], data_dir: Path) -> dict[str, Any] | None:
    found: dict[str, Path] = {}
    for name in names:
        match = _DOUBAN_FILE.match(name)
        if match and match["domain"] not in found:
            found[match["domain"]] = directory / name
    if len(found) < 2:
        return None
    domains = sorted(found)
    rows = {d: _count_lines(found[d]) for d in domains}
    return _entry(_relname(directory, data_dir), "douban", directory,
                  [found[d] for d in domains], domains, rows,
                  f"read_douban({str(directory)!r}, domains={tuple(domains)!r})")


def _pairs(directory: Path, subdirs: list[str], data_dir: Path) -> list[dict[str, Any]]:
    entries = []
    with_train = {s for s in subdirs if any((directory / s / t).is_file() for t in _TRAIN)}
    for folder in sorted(with_train):
        match = _PAIR_DIR.match(folder)
        if not match or f"{match['b']}_{match['a']}" not in with_train:
            continue
        a, b = match["a"], match["b"]
        if a > b:  # report each pair once, under its alphabetically first folder
            continue
        files, rows = [], {}
        for dom, sub in ((a, f"{a}_{b}"), (b, f"{b}_{a}")):
            for name in sorted(os.listdir(directory / sub)):
                if name.endswith((".txt", ".txt.gz")):
                    files.append(directory / sub / name)
            train = next(directory / sub / t for t in _TRAIN if (directory / sub / t).is_file())
            rows[dom] = _count_lines(train)
        entries.append(_entry(f"{_relname(directory, data_dir)}/{a}_{b}",
                              "amazon_implicit_pair", directory, files, [a, b], rows,
                              f"read_amazon_implicit_pair({str(directory)!r}, {a!r}, {b!r})"))
    return entries


def _stem(name: str) -> str:
    return name.split(".")[0]


def _recbole_file(path: Path, data_dir: Path) -> dict[str, Any] | None:
    """A RecBole atomic ``.inter`` file, judged by its typed header (``name:type`` fields)."""
    if not path.name.lower().endswith((".inter", ".inter.gz")):
        return None
    line = _first_line(path)
    if not line or not all(":" in field for field in line.split("\t")):
        return None
    domain = path.name.split(".")[0]
    lines = _count_lines(path)  # the header is one of them
    return _entry(_relname(path, data_dir), "recbole", path.parent, [path], [domain],
                  {domain: None if lines is None else max(0, lines - 1)},
                  f"read_recbole({{{domain!r}: {str(path)!r}}})")


def _amazon_file(path: Path, data_dir: Path) -> dict[str, Any] | None:
    """An Amazon reviews JSON-lines / CSV file or a ratings-only CSV, judged by its first line."""
    name = path.name.lower()
    is_json = name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz"))
    is_csv = name.endswith((".csv", ".csv.gz"))
    if not (is_json or is_csv):
        return None
    line = _first_line(path)
    if not line:
        return None
    domain = _stem(path.name)
    label = _relname(path, data_dir)
    if is_json:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not (isinstance(record, dict) and {"reviewerID", "asin", "overall"} <= set(record)):
            return None
        return _entry(label, "amazon_reviews_json", path.parent, [path], [domain],
                      {domain: _count_lines(path)},
                      f"read_amazon_json({{{domain!r}: {str(path)!r}}})")
    header = [h.strip().strip('"') for h in line.split(",")]
    if {"reviewerID", "asin", "overall"} <= set(header):
        return _entry(label, "amazon_reviews_csv", path.parent, [path], [domain],
                      {domain: _count_csv_rows(path)},
                      f"read_amazon_reviews({{{domain!r}: {str(path)!r}}})")
    fields = line.split(",")
    if len(fields) == 4 and re.fullmatch(r"[1-5](?:\.0)?", fields[2]) and fields[3].isdigit():
        return _entry(label, "amazon_ratings_csv", path.parent, [path], [domain],
                      {domain: _count_lines(path)},
                      f"read_amazon_ratings_csv({{{domain!r}: {str(path)!r}}})")
    return None


def _relname(path: Path, data_dir: Path) -> str:
    try:
        rel = path.relative_to(data_dir)
    except ValueError:
        return path.name
    if not rel.parts:
        return data_dir.resolve().name
    if path.is_file():
        rel = rel.parent / _stem(rel.name)
    return rel.as_posix()


def find_datasets(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Datasets cdrec can read found under ``data_dir`` (searched up to 3 levels deep).

    Recognises a Douban folder (two or more ``{domain}_ratings.tsv[.gz]``), DisenCDR-style
    Amazon pair folders (``a_b/`` and ``b_a/`` each with ``train.txt[.gz]``), Amazon review
    files (JSON lines or CSV with ``reviewerID, asin, overall``), Amazon ratings-only CSVs and
    RecBole atomic ``.inter`` files.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")
    found: list[dict[str, Any]] = []
    for current, subdirs, names in os.walk(root):
        directory = Path(current)
        depth = len(directory.relative_to(root).parts)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".")) if depth < MAX_DEPTH \
            else []
        names = sorted(names)
        douban = _douban(directory, names, root)
        if douban is not None:
            found.append(douban)
        found.extend(_pairs(directory, subdirs, root))
        for name in names:
            entry = _amazon_file(directory / name, root) or _recbole_file(directory / name, root)
            if entry is not None:
                found.append(entry)
    return found


def shipped_datasets() -> list[dict[str, Any]]:
    """The samples shipped with cdrec, described like :func:`find_datasets` entries."""
    entries = []
    for name, description in SAMPLES.items():
        path = sample_path(name)
        found = find_datasets(path)
        if not found:
            continue
        entry = found[0]
        entry["name"] = name
        entry["domains"] = SAMPLE_DOMAINS[name]
        if entry["rows"] is not None:
            entry["rows"] = {d: entry["rows"][d] for d in SAMPLE_DOMAINS[name]}
        entry["shipped"] = True
        entry["description"] = description
        entry["provenance"] = str(SAMPLE_DIR / "PROVENANCE.md")
        entry["reader"] = f"load_sample({name!r})"
        entries.append(entry)
    return entries
