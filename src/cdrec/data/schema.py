"""Validation of interaction tables at the boundary, with errors naming file, row and column.

Every reader turns a file into a ``pandas.DataFrame`` whose rows carry the number the user would
see (``ROW``), then hands it to :func:`validate_interactions`, which checks what all readers share:
required columns, missing ids, ratings that are not numbers or outside the declared scale,
timestamps, empty tables, and duplicate ``(user, item)`` pairs (by default the last kept, with a
``DataWarning``; or the first kept, or refused: :func:`drop_duplicate_pairs`).
Nothing is dropped without a warning or an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


class DataError(ValueError):
    """Input data that cdrec refuses, with where it was found (file, row, column)."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None,
                 column: str | None = None) -> None:
        where = []
        if path is not None:
            where.append(f"file {path}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.path, self.row, self.column = path, row, column


class MissingFileError(DataError, FileNotFoundError):
    """A data file that does not exist; both a ``DataError`` and a ``FileNotFoundError``."""


class DataWarning(UserWarning):
    """Input cdrec accepts after a documented repair (e.g. duplicate pairs, last one kept)."""


# Name of the column that carries each row's number as the user sees it in the file.
ROW = "__cdrec_row__"

# How row numbers are counted, said in every message that names a row.
ROWS_WITH_HEADER = "rows counted from 1 at the first data row, header line not counted"
ROWS_LINES = "rows counted from 1 at the first line of the file"
ROWS_TABLE = "rows counted from 1 in file order"

ROLES = ("user", "item", "rating", "timestamp")

# Which row of a repeated (user, item) pair is kept: the last, the first, or none (refused).
DUPLICATES = ("last", "first", "error")
# Name of the column that carries, in a frame concatenated from several files, each row's file
# (an index into the list of those files).
FILE = "__cdrec_file__"

_CANONICAL_INT = r"-?(?:0|[1-9][0-9]{0,17})"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> tuple[int, int]:
    """(row number of the first masked row, how many rows are masked)."""
    mask = np.asarray(mask, dtype=bool)
    first = int(np.flatnonzero(mask)[0])
    return int(frame[ROW].iloc[first]), int(mask.sum())


def _count_note(count: int, rows: str) -> str:
    more = "" if count == 1 else f"; {count} such rows, the first is named"
    return f" ({rows}{more})"


def column_label(column: Hashable, role: str, header: bool) -> str:
    """How a column is named in messages: its header, or its 1-based field number and role."""
    if header:
        return str(column)
    if isinstance(column, int | np.integer):
        return f"field {int(column) + 1} ({role})"
    return f"{column} ({role})"


def require_columns(frame: pd.DataFrame, columns: Mapping[str, Hashable | None], *, path: str,
                    header: bool = True) -> None:
    """Raise a ``DataError`` naming every required column the file lacks."""
    present = [c for c in frame.columns if c != ROW]
    missing = [(role, col) for role, col in columns.items()
               if col is not None and col not in present]
    if not missing:
        return
    col = missing[0][1]
    names = ", ".join(f"{c!r} ({r})" for r, c in missing)
    if header:
        have = ", ".join(repr(c) for c in present)
        raise DataError(f"missing column(s) {names}; the file has columns {have}",
                        path=path, column=str(col))
    raise DataError(
        f"missing column(s) {names}: the file has no header and {len(present)} field(s) per line "
        f"(fields are given by 0-based position)", path=path, column=str(col))


def check_not_empty(frame: pd.DataFrame, *, path: str, domain: str | None = None) -> None:
    if len(frame) == 0:
        what = "no data rows" if domain is None else f"no data rows for domain {domain!r}"
        raise DataError(f"{what}; an empty domain cannot be used", path=path)


def check_ids(frame: pd.DataFrame, column: Hashable, *, role: str, path: str, rows: str,
              label: str | None = None) -> None:
    """Refuse missing (empty / NaN) ids."""
    missing = frame[column].isna().to_numpy()
    if missing.any():
        row, count = _first(frame, missing)
        raise DataError(f"{role} id is missing{_count_note(count, rows)}", path=path, row=row,
                        column=label or str(column))


def parse_ratings(frame: pd.DataFrame, column: Hashable, *, scale: tuple[float, float] | None,
                  path: str, rows: str, label: str | None = None) -> np.ndarray:
    """Ratings as float32; refuses non-numbers, NaN and values outside ``scale``.

    ``scale=None`` means implicit feedback: every value must be 1.
    """
    label = label or str(column)
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raw = raw.astype(np.int8)
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        missing = raw.isna().to_numpy()
        text = raw.astype("string").str.strip().str.lower()
        nan_text = text.isin(["nan", "na", "n/a", "null", "none", ""]).fillna(True).to_numpy()
        nan_like = bad & (missing | nan_text)
        not_number = bad & ~nan_like
        if not_number.any():
            row, count = _first(frame, not_number)
            value = raw.to_numpy()[np.flatnonzero(not_number)[0]]
            hint = " (is the first line a header? this file is read without one)" if (
                row == 1 and rows == ROWS_LINES) else ""
            raise DataError(f"rating {_show(value)} is not a number{hint}"
                            f"{_count_note(count, rows)}", path=path, row=row, column=label)
        row, count = _first(frame, nan_like)
        raise DataError(f"rating is missing or NaN{_count_note(count, rows)}", path=path, row=row,
                        column=label)
    array = values.to_numpy(dtype=np.float64)
    if scale is None:
        outside = array != 1.0
        if outside.any():
            row, count = _first(frame, outside)
            value = array[np.flatnonzero(outside)[0]]
            raise DataError(
                f"rating {value:g} in implicit-feedback data (rating_scale=None), where every "
                f"value must be 1; declare rating_scale=(low, high) and binarize instead"
                f"{_count_note(count, rows)}", path=path, row=row, column=label)
    else:
        low, high = scale
        outside = (array < low) | (array > high)
        if outside.any():
            row, count = _first(frame, outside)
            value = array[np.flatnonzero(outside)[0]]
            raise DataError(f"rating {value:g} is outside the declared scale {low:g}..{high:g}"
                            f"{_count_note(count, rows)}", path=path, row=row, column=label)
    return array.astype(np.float32)


# Words pandas turns into the clock's current time: data read twice would differ, so refused.
_CLOCK_WORDS = ("now", "today")


def _to_datetime(text: pd.Series) -> pd.Series:
    """Date strings as UTC datetimes (NaT where a value is not a date), without pandas warnings.

    One format is inferred from the first value and applied to all (fast); the values it does
    not fit are retried one by one (``format="mixed"``). pandas warns when it cannot infer a
    format; that is expected here and the caller names every value that fails, so the warning
    is silenced rather than left to leak out of a reader.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stamps = pd.to_datetime(text, errors="coerce", utc=True)
        retry = (stamps.isna() & text.notna()).to_numpy()
        if retry.any():
            again = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
            stamps = stamps.where(~retry, again.reindex(text.index).astype(stamps.dtype))
    clock = text.astype("string").str.strip().str.lower().isin(_CLOCK_WORDS).fillna(False)
    return stamps.mask(clock.to_numpy(dtype=bool))


def parse_timestamps(frame: pd.DataFrame, column: Hashable, *, path: str, rows: str,
                     label: str | None = None) -> np.ndarray:
    """Timestamps as int64 seconds: numbers (epoch seconds) as they are, dates converted.

    A column is numbers or dates, not both: a value of the other kind, a value that is
    neither, or a missing value is an error naming its row and value (the first of them, with
    the count).
    """
    label = label or str(column)
    raw = frame[column].reset_index(drop=True)  # positions as index: subsets realign safely
    missing = raw.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = raw
    else:
        numbers = pd.to_numeric(raw, errors="coerce")
        if pd.api.types.is_integer_dtype(numbers):
            return numbers.to_numpy(dtype=np.int64)
        numeric = numbers.notna().to_numpy()
        other = ~numeric & ~missing  # neither missing nor a number: must be a date
        if not other.any():
            if missing.any():
                row, count = _first(frame, missing)
                raise DataError(f"timestamp is missing{_count_note(count, rows)}", path=path,
                                row=row, column=label)
            array = numbers.to_numpy(dtype=np.float64)
            if not np.isfinite(array).all():
                row, count = _first(frame, ~np.isfinite(array))
                raise DataError(f"timestamp is not finite{_count_note(count, rows)}", path=path,
                                row=row, column=label)
            return np.floor(array).astype(np.int64)
        # Only the values that are not numbers are parsed as dates: a column of epoch seconds
        # with one bad value must name that value, not fail every number as "not a date".
        stamps = _to_datetime(raw[other]).reindex(raw.index)  # NaT at the numbers
        bad = other & stamps.isna().to_numpy()
        if bad.any():
            row, count = _first(frame, bad)
            value = raw.to_numpy()[np.flatnonzero(bad)[0]]
            raise DataError(f"timestamp {_show(value)} is neither a number nor a date"
                            f"{_count_note(count, rows)}", path=path, row=row, column=label)
        if numeric.any():
            # Both kinds: name the first value of the rarer kind, the likelier mistake.
            n_numbers, n_dates = int(numeric.sum()), int(other.sum())
            odd = numeric if n_numbers <= n_dates else other
            row, count = _first(frame, odd)
            value = raw.to_numpy()[np.flatnonzero(odd)[0]]
            total = n_numbers + n_dates
            if odd is numeric:
                kind, rest = "a number", f"{n_dates} of the {total} values are dates"
            else:
                kind, rest = "a date", f"{n_numbers} of the {total} values are epoch seconds"
            raise DataError(f"timestamp {_show(value)} is {kind} but {rest}; a timestamp column "
                            f"holds one kind{_count_note(count, rows)}", path=path, row=row,
                            column=label)
    if stamps.isna().any():
        row, count = _first(frame, stamps.isna().to_numpy())
        raise DataError(f"timestamp is missing{_count_note(count, rows)}", path=path, row=row,
                        column=label)
    if getattr(stamps.dt, "tz", None) is None:
        stamps = stamps.dt.tz_localize("UTC")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


def drop_duplicate_pairs(frame: pd.DataFrame, *, path: str, rows: str,
                         domain: str | None = None, keep: str = "last",
                         paths: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per repeated ``(user, item)`` pair; never silently.

    ``keep="last"`` (the readers' default) keeps the last row of each pair and ``"first"`` the
    first, each with a ``DataWarning`` counting the rows dropped and naming the first of them;
    ``"error"`` refuses the data with a ``DataError`` naming the first repeated row and the row
    it repeats. ``paths``: the files of a frame concatenated from several, in order (its ``FILE``
    column indexes them), so that rows are named with their own file.
    """
    if keep not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {keep!r}")
    dup = frame.duplicated(["user", "item"], keep="last" if keep == "last" else "first")
    dup_rows = dup.to_numpy()
    if not dup_rows.any():
        return frame
    row, count = _first(frame, dup_rows)
    first = int(np.flatnonzero(dup_rows)[0])

    def file_of(pos: int) -> str:
        return path if paths is None else paths[int(frame[FILE].iloc[pos])]

    in_domain = "" if domain is None else f" in domain {domain!r}"
    if keep == "error":
        pair = frame[["user", "item"]].iloc[first]
        same = ((frame["user"] == pair["user"]) & (frame["item"] == pair["item"])).to_numpy()
        earlier = int(np.flatnonzero(same)[0])
        of = "" if paths is None else f" of file {file_of(earlier)}"
        raise DataError(
            f"(user, item) pair ({_show(pair['user'])}, {_show(pair['item'])}) occurs again"
            f"{in_domain}, first at row {int(frame[ROW].iloc[earlier])}{of}; "
            f"{count} such repeated row(s); set duplicates: first or last to keep one row of "
            f"each pair ({rows})", path=file_of(first), row=row)
    kept, dropped = ("last", "earlier") if keep == "last" else ("first", "later")
    order = "" if paths is None else " (files in the order given)"
    of = "" if paths is None else f" of file {file_of(first)}"
    head = f"file {path}" if paths is None else f"files {', '.join(paths)}"
    warnings.warn(
        f"{head}: {count} duplicate (user, item) row(s){in_domain}; kept the {kept} occurrence "
        f"of each pair{order} and dropped {count} {dropped} row(s), the first at row {row}{of} "
        f"({rows})", DataWarning, stacklevel=4)
    return frame.loc[~dup_rows]


def validate_interactions(frame: pd.DataFrame, columns: Mapping[str, Hashable | None], *,
                          path: str, rows: str, rating_scale: tuple[float, float] | None,
                          header: bool = True, domain: str | None = None,
                          keep: Sequence[Hashable] = (), duplicates: str = "last"
                          ) -> pd.DataFrame:
    """Check one domain's rows from one file and return them in the common form.

    ``frame`` holds the file's columns plus ``ROW``; ``columns`` maps the roles ``user``,
    ``item``, ``rating`` (``None``: implicit, all 1) and ``timestamp`` (``None``: absent) to the
    file's columns. The result has columns ``user``, ``item`` (ids as read), ``rating``
    (float32), ``timestamp`` (int64, if given), ``ROW`` and the ``keep`` columns, with duplicate
    pairs removed as ``duplicates`` says (see :func:`drop_duplicate_pairs`; default: the last
    kept, with a ``DataWarning``).
    """
    require_columns(frame, columns, path=path, header=header)
    check_not_empty(frame, path=path, domain=domain)
    labels = {role: column_label(col, role, header) for role, col in columns.items()
              if col is not None}
    out: dict[Hashable, np.ndarray] = {ROW: frame[ROW].to_numpy()}
    for role in ("user", "item"):
        check_ids(frame, columns[role], role=role, path=path, rows=rows, label=labels[role])
        out[role] = frame[columns[role]].to_numpy()
    if columns.get("rating") is None:
        out["rating"] = np.ones(len(frame), dtype=np.float32)
    else:
        out["rating"] = parse_ratings(frame, columns["rating"], scale=rating_scale, path=path,
                                      rows=rows, label=labels["rating"])
    if columns.get("timestamp") is not None:
        out["timestamp"] = parse_timestamps(frame, columns["timestamp"], path=path, rows=rows,
                                            label=labels["timestamp"])
    for col in keep:
        out[col] = frame[col].to_numpy()
    result = pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
    # Later checks across files (mixed id types) name rows with the file's own convention and
    # column labels; pandas keeps ``attrs`` through the row selections that follow.
    result.attrs.update(rows=rows, labels=labels)
    return drop_duplicate_pairs(result, path=path, rows=rows, domain=domain, keep=duplicates)


MIXED_IDS = ("warn", "error")


@dataclass(frozen=True)
class IdSource:
    """Where one part of an id column came from, to name a row in messages."""

    path: str | None
    rows: np.ndarray  # the row number (``ROW``) of each id
    label: str  # the column as messages name it
    convention: str = ROWS_TABLE  # how ``rows`` count (one of the ``ROWS_*`` sentences)
    # Ids concatenated from several files: the files, and each id's file (index into them).
    files: tuple[str, ...] = ()
    file_of: np.ndarray | None = None

    def path_at(self, pos: int) -> str | None:
        """The file the ``pos``-th id was read from."""
        return self.path if self.file_of is None else self.files[int(self.file_of[pos])]


def normalise_ids(parts: Sequence[pd.Series | np.ndarray], mode: str = "auto", *,
                  role: str = "id", sources: Sequence[IdSource] | None = None,
                  mixed: str = "warn") -> list[np.ndarray]:
    """Put id columns that must be compared with each other into one type.

    ``mode="str"``: every id as text. ``mode="auto"``: int64 when every id in every part is an
    integer (integer dtype, integral floats, or text in canonical integer form such as ``"42"``,
    not ``"042"``), else text; so ids sort numerically when they are numbers.

    In ``"auto"`` mode, text ids among ids that are mostly integers (one ``"alice"`` among
    numbers) turn every id into text, which reorders the ids and so changes seeded splits:
    ``mixed="warn"`` warns (``DataWarning``) with the count and the first text id's row,
    ``mixed="error"`` raises a ``DataError``. ``sources`` (one per part) say where each part was
    read, for the message.
    """
    series = [p if isinstance(p, pd.Series) else pd.Series(p) for p in parts]
    if mode not in ("auto", "str"):
        raise ValueError(f"id mode must be 'auto' or 'str', got {mode!r}")
    if mixed not in MIXED_IDS:
        raise ValueError(f"mixed_ids must be 'warn' or 'error', got {mixed!r}")
    if sources is not None and len(sources) != len(series):
        raise ValueError(f"{len(sources)} sources for {len(series)} id parts")
    if mode == "auto":
        if all(pd.api.types.is_integer_dtype(s) for s in series):
            return [s.to_numpy(dtype=np.int64) for s in series]
        if all(pd.api.types.is_float_dtype(s) or pd.api.types.is_integer_dtype(s)
               for s in series):
            arrays = [s.to_numpy(dtype=np.float64) for s in series]
            if all(bool(np.all(a == np.floor(a))) and bool(np.all(np.abs(a) < 2**53))
                   for a in arrays):
                return [a.astype(np.int64) for a in arrays]
        texts = [s.astype("string") for s in series]
        is_int = [t.str.fullmatch(_CANONICAL_INT).fillna(False).to_numpy(dtype=bool)
                  for t in texts]
        if all(bool(flags.all()) for flags in is_int):
            return [t.astype(np.int64).to_numpy(dtype=np.int64) for t in texts]
        n_int = sum(int(flags.sum()) for flags in is_int)
        if n_int * 2 >= sum(len(flags) for flags in is_int):
            # Mostly integers: the text ids are likely mistakes that reorder every id. (Mostly
            # text, as Amazon's ASINs with a few all-digit ones, is text data: no warning.)
            _mixed_ids(texts, is_int, role=role, sources=sources, mixed=mixed)
        return [t.to_numpy(dtype=object) for t in texts]
    return [s.astype("string").to_numpy(dtype=object) for s in series]


def _mixed_ids(texts: Sequence[pd.Series], is_int: Sequence[np.ndarray], *, role: str,
               sources: Sequence[IdSource] | None, mixed: str) -> None:
    """Warn about (or refuse) text ids among integer ids, naming the first text one."""
    n = sum(len(flags) for flags in is_int)
    n_int = sum(int(flags.sum()) for flags in is_int)
    odd = [~flags for flags in is_int]
    count = n - n_int
    part = next(i for i, o in enumerate(odd) if o.any())
    pos = int(np.flatnonzero(odd[part])[0])
    value = texts[part].iloc[pos]
    source = sources[part] if sources is not None else None
    convention = source.convention if source is not None else ROWS_TABLE
    files: set[str | None] = set()
    for src, o in zip(sources or [], odd, strict=False):
        if src.file_of is None:
            files |= {src.path} if o.any() else set()
        else:
            files |= {src.files[int(k)] for k in np.unique(src.file_of[o])}
    across = f" across {len(files)} files" if len(files) > 1 else ""
    more = "" if count == 1 else f"; {count} such rows{across}, the first is named"
    then = (f"every {role} id would be read as text, and text ids sort differently, which "
            "changes seeded splits; make the ids one type, or set mixed_ids='warn' to read them "
            "as text" if mixed == "error" else
            f"every {role} id is read as text (set mixed_ids='error' to refuse such data), and "
            "text ids sort differently, which changes seeded splits; make the ids one type")
    message = (f"{role} id {_show(value)} is not an integer, but {n_int} of the {n} rows have "
               f"integer {role} ids: {then} ({convention}{more})")
    error = DataError(message, path=None if source is None else source.path_at(pos),
                      row=None if source is None else int(source.rows[pos]),
                      column=None if source is None else source.label)
    if mixed == "error":
        raise error
    warnings.warn(str(error), DataWarning, stacklevel=5)  # at the reader's caller
