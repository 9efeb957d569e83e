"""Reading one data file into a ``pandas.DataFrame`` whose ``ROW`` column numbers rows as the
user sees them: CSV / TSV (any separator), Parquet and JSON lines, gzip'd or not, with errors
that name the file (and the line, for malformed text). Shared by every reader of the package
(interactions, RecBole atomic files, feature tables).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from cdrec.data.schema import (
    ROW,
    ROWS_LINES,
    ROWS_TABLE,
    ROWS_WITH_HEADER,
    DataError,
    MissingFileError,
)

GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------------------------
# Reading one file into a DataFrame whose ROW column numbers rows as the user sees them
# --------------------------------------------------------------------------------------------

def detect_compression(path: Path) -> Literal["gzip"] | None:
    """``"gzip"`` or ``None``, from the file's first bytes; refuses missing and empty files."""
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=str(path))
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not head:
        raise DataError("the file is empty (0 bytes)", path=str(path))
    if head == GZIP_MAGIC:
        return "gzip"
    if path.suffix.lower() == ".gz":
        raise DataError("not a gzip file: the name ends in .gz but the content does not start "
                        "with the gzip signature", path=str(path))
    return None


def unreadable(path: Path, exc: BaseException) -> DataError:
    kind = "corrupt or truncated gzip data" if isinstance(
        exc, (gzip.BadGzipFile, EOFError, zlib.error)) else type(exc).__name__
    return DataError(f"cannot read the file ({kind}: {exc})", path=str(path))


def format_of(path: Path, sep: str | None) -> tuple[str, str | None]:
    """(``"delimited"`` | ``"parquet"`` | ``"jsonl"``, separator) from the name's suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".parquet", ".pq"):
        return "parquet", None
    if last in (".json", ".jsonl", ".ndjson"):
        return "jsonl", None
    if sep is not None:
        return "delimited", sep
    if last == ".csv":
        return "delimited", ","
    if last in (".tsv", ".tab"):
        return "delimited", "\t"
    raise DataError(f"cannot tell the format from the suffix {last or '(none)'!r}; use .csv, "
                    f".tsv, .parquet or .json[l] (optionally .gz), or pass sep=", path=str(path))


def drop_blank(frame: pd.DataFrame) -> pd.DataFrame:
    """Blank lines are not data: drop them after rows are numbered, so numbers stay right."""
    data = frame.drop(columns=[ROW])
    if data.shape[1] == 0:
        return frame
    blank = data.isna().all(axis=1).to_numpy()
    return frame.loc[~blank].reset_index(drop=True) if blank.any() else frame


def read_delimited(path: Path, sep: str, header: bool) -> tuple[pd.DataFrame, str]:
    compression = detect_compression(path)
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str,
                            keep_default_na=False, na_values=[""], skip_blank_lines=False,
                            compression=compression)
    except pd.errors.EmptyDataError:
        raise DataError("no data: the file holds no rows", path=str(path)) from None
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        row = None if match is None else int(match.group(1)) - (1 if header else 0)
        rows = ROWS_WITH_HEADER if header else ROWS_LINES
        detail = " ".join(str(exc).split())
        raise DataError(f"malformed line: {detail} ({rows})", path=str(path), row=row) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from None
    if not isinstance(frame.index, pd.RangeIndex):
        raise DataError("the data rows have more fields than the header names", path=str(path))
    frame[ROW] = np.arange(1, len(frame) + 1)
    return drop_blank(frame), ROWS_WITH_HEADER if header else ROWS_LINES


def read_parquet(path: Path) -> tuple[pd.DataFrame, str]:
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise unreadable(path, exc) from None
    frame = frame.reset_index(drop=True)
    frame[ROW] = np.arange(1, len(frame) + 1)
    return frame, ROWS_TABLE


def read_jsonl(path: Path) -> tuple[pd.DataFrame, str]:
    compression = detect_compression(path)
    try:
        if compression == "gzip":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from None
    lines = pd.Series(text.split("\n"), dtype="string")
    nonblank = (lines.str.strip().str.len() > 0).to_numpy()
    if not nonblank.any():
        raise DataError("no data: the file holds no JSON lines", path=str(path))
    body = lines[nonblank]
    try:
        frame = pd.read_json(io.StringIO("\n".join(body.tolist())), lines=True, dtype=False)
    except ValueError:
        # Only on failure: find the first line that does not parse, to name it.
        numbers = np.flatnonzero(nonblank) + 1
        for number, line in zip(numbers, body.tolist(), strict=True):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg}, character {exc.pos + 1}) "
                                f"({ROWS_LINES})", path=str(path), row=int(number)) from None
            if not isinstance(record, dict):
                raise DataError(f"a JSON object was expected, got {type(record).__name__} "
                                f"({ROWS_LINES})", path=str(path), row=int(number)) from None
        raise DataError("cannot read the JSON lines", path=str(path)) from None
    if len(frame) != int(nonblank.sum()):
        raise DataError(f"read {len(frame)} records from {int(nonblank.sum())} lines; every "
                        f"line must hold one JSON object", path=str(path))
    frame[ROW] = np.flatnonzero(nonblank) + 1
    return frame, ROWS_LINES


def read_file(path: Path, fmt: str, sep: str | None, header: bool) -> tuple[pd.DataFrame, str]:
    if fmt == "parquet":
        return read_parquet(path)
    if fmt == "jsonl":
        return read_jsonl(path)
    assert sep is not None
    return read_delimited(path, sep, header)


def find_file(directory: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    tried = " or ".join(names)
    raise MissingFileError(f"file not found: looked for {tried}", path=str(directory / names[0]))


def check_field_count(frame: pd.DataFrame, expected: int, fields: str, path: Path) -> None:
    """Headerless files: exactly ``expected`` fields per line (fewer is caught per column)."""
    found = frame.shape[1] - 1
    if found > expected:
        raise DataError(f"expected {expected} fields per line ({fields}), found {found}",
                        path=str(path), column=f"field {expected + 1}")
