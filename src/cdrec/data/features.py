"""User and item feature tables: side information keyed by the same ids as the interactions.

A feature file is a table with a header (CSV / TSV / Parquet / JSON lines, gzip'd or not) with
one row per user or item: an id column and feature columns. :func:`read_features` turns it into
a :class:`FeatureTable`, a dense float32 tensor whose row ``i`` belongs to the entity with
internal index ``i`` (the order of ``CrossDomainData.user_ids`` or ``Domain.item_ids``), so a
model gathers ``table.values[users]`` with the indices it already has:

- a **categorical** column becomes one 0/1 column per distinct value, named ``"column=value"``
  (values in sorted order of their text). With ``multi_value_sep`` (default ``"|"``) a cell such
  as ``"rock|pop"`` holds several values and sets each of their columns (multi-hot). Tokens are
  stripped of surrounding white space; an empty cell sets none;
- a **numeric** column is standardised (z-score) with the mean and the population standard
  deviation (``ddof=0``) of all the rows of the file that are kept: ``(x - mean) / std``. A
  constant column becomes zeros. The statistics are kept in ``FeatureTable.scaling``.

Entities of the data without a row in the file get an all-zero row (for a numeric feature that
is its mean) and ``present[i] == False``, so a model can tell a missing row from a real one.

Errors (``DataError``) name the file, the row and the column. Rows of CSV / TSV files are
counted as the file's lines are: the header is row 1, the first data row row 2 (a quoted value
that spans lines counts as one row). Parquet rows are counted from 1 in file order, JSON lines by
line number. Refused: a missing id column, a feature column the header does not name, a missing
id, an id the data does not hold (or, with ``unknown_ids="warn"``, such rows are dropped with a
``DataWarning``), an id given twice (both rows are named), an empty, non-numeric or non-finite
value in a numeric column, and a file without data rows.

Features are standardised once, when read; transforms that later drop items (``k_core``) or
copy users select the rows of the table and leave its values as they are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from cdrec.data.files import format_of, read_file
from cdrec.data.schema import (
    _CANONICAL_INT,
    ROW,
    ROWS_LINES,
    ROWS_TABLE,
    DataError,
    DataWarning,
    _count_note,
    _first,
    _show,
    check_ids,
)

if TYPE_CHECKING:
    from cdrec.data.dataset import CrossDomainData

Entity = Literal["user", "item"]
UnknownIds = Literal["error", "warn"]
ENTITIES = ("user", "item")
UNKNOWN_IDS = ("error", "warn")

# How rows of delimited feature files are counted in messages (the header line counts).
ROWS_FEATURES = "rows are the file's lines: the header is row 1, the first data row row 2"


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Dense features of every user (or every item of one domain), aligned to internal ids.

    ``values[i]`` (float32, ``[n_entities, n_features]``) are the features of entity ``i``;
    ``names[j]`` names column ``j`` (``"genre=rock"``, ``"age"``); ``present[i]`` (bool) says
    whether the file had a row for entity ``i`` (if not, ``values[i]`` is all zeros).
    ``scaling`` maps each numeric column to the ``(mean, std)`` it was standardised with (std 0:
    a constant column, set to zeros). ``path`` is the file read (``None`` if built in memory).
    """

    values: torch.Tensor
    names: tuple[str, ...]
    present: torch.Tensor
    entity: str = "item"
    path: str | None = None
    scaling: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.entity not in ENTITIES:
            raise ValueError(f"FeatureTable.entity must be 'user' or 'item', got {self.entity!r}")
        if self.values.ndim != 2 or self.values.dtype != torch.float32:
            raise ValueError(f"FeatureTable.values must be a 2-D float32 tensor, got "
                             f"{self.values.dtype} of shape {tuple(self.values.shape)}")
        if self.values.shape[1] != len(self.names):
            raise ValueError(f"FeatureTable has {self.values.shape[1]} columns and "
                             f"{len(self.names)} names")
        if self.present.dtype != torch.bool or self.present.shape != self.values.shape[:1]:
            raise ValueError(f"FeatureTable.present must be a bool tensor of "
                             f"{self.values.shape[0]} rows, got {self.present.dtype} of shape "
                             f"{tuple(self.present.shape)}")

    @property
    def n_rows(self) -> int:
        """Number of entities (users of the data, or items of the domain)."""
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return self.n_rows

    def select(self, index: torch.Tensor) -> FeatureTable:
        """Rows picked by a boolean mask or an index tensor (repeats allowed), for transforms
        that drop or copy entities; values are not re-standardised."""
        return replace(self, values=self.values[index], present=self.present[index])

    def column(self, name: str) -> torch.Tensor:
        """The values of the feature called ``name`` (one per entity)."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(f"no feature {name!r}; the table has {list(self.names)}") from None

    def describe(self) -> str:
        """One line: entity, shape, how many entities have a row, and the file."""
        where = "" if self.path is None else f" from {self.path}"
        return (f"{self.entity} features{where}: {self.n_features} columns, "
                f"{int(self.present.sum())} of {self.n_rows} {self.entity}s present")


@dataclass(frozen=True)
class FeatureSpec:
    """Where one feature file is and which of its columns to read (see :func:`read_features`).

    A config's ``data.features.<domain>.users`` / ``.items`` holds these keys.
    """

    path: str | Path
    id_column: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    multi_value_sep: str | None = "|"
    sep: str | None = None
    unknown_ids: Literal["error", "warn"] = "error"

    def __post_init__(self) -> None:
        for name in ("categorical", "numeric"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"{name} must be a list of column names, got the string "
                                f"{value!r}")
            object.__setattr__(self, name, tuple(str(c) for c in value))
        _check_columns(self.id_column, self.categorical, self.numeric)
        if self.unknown_ids not in UNKNOWN_IDS:
            raise ValueError(f"unknown_ids must be 'error' or 'warn', got {self.unknown_ids!r}")
        if self.multi_value_sep == "":
            raise ValueError("multi_value_sep must be a non-empty string or null")

    def resolved(self, root: str | os.PathLike[str] | None) -> FeatureSpec:
        """The spec with a relative ``path`` read under ``root`` (unchanged without a root)."""
        path = Path(self.path)
        if root is None or path.is_absolute():
            return replace(self, path=path)
        return replace(self, path=Path(root) / path)


@dataclass(frozen=True)
class DomainFeatures:
    """The feature files of one domain: ``users`` (rows: every user of the data) and ``items``
    (rows: the domain's items); either may be ``None``."""

    users: FeatureSpec | None = None
    items: FeatureSpec | None = None


def _check_columns(id_column: str, categorical: Sequence[str], numeric: Sequence[str]) -> None:
    if not categorical and not numeric:
        raise ValueError("a feature file needs at least one categorical or numeric column")
    seen: dict[str, str] = {}
    for kind, names in (("categorical", categorical), ("numeric", numeric)):
        for name in names:
            if name == id_column:
                raise ValueError(f"column {name!r} is the id column; it cannot be a {kind} "
                                 "feature as well")
            if name in seen:
                again = "twice" if seen[name] == kind else f"as {seen[name]} and as {kind}"
                raise ValueError(f"column {name!r} is listed {again}")
            seen[name] = kind


# --------------------------------------------------------------------------------------------
# Reading one feature file
# --------------------------------------------------------------------------------------------

def _plain(value: object) -> object:
    """A numpy scalar as the Python value, so messages show ``1.5``, not ``np.float64(1.5)``."""
    return value.item() if isinstance(value, np.generic) else value


def _positions(raw: pd.Series, ids_map: np.ndarray) -> np.ndarray:
    """Internal index of every id of ``raw`` (``-1``: not among ``ids_map``), matching ids the
    way the interaction readers do: integer ids by value, text ids by their exact text."""
    index = pd.Index(ids_map)
    if not index.is_unique:
        raise ValueError("ids_map holds repeated ids; it must list each entity's id once")
    if pd.api.types.is_integer_dtype(ids_map.dtype):
        if pd.api.types.is_integer_dtype(raw.dtype):
            return np.asarray(index.get_indexer(raw.to_numpy(dtype=np.int64)))
        keys = np.zeros(len(raw), dtype=np.int64)
        if pd.api.types.is_float_dtype(raw.dtype):
            numbers = raw.to_numpy(dtype=np.float64)
            ok = (numbers == np.floor(numbers)) & (np.abs(numbers) < 2**53)
            keys[ok] = numbers[ok].astype(np.int64)
        else:
            text = raw.astype("string")
            ok = text.str.fullmatch(_CANONICAL_INT).fillna(False).to_numpy(dtype=bool)
            if ok.any():
                keys[ok] = text[ok].astype(np.int64).to_numpy(dtype=np.int64)
        found = np.asarray(index.get_indexer(keys))
        return np.where(ok, found, -1)
    text_index = pd.Index(np.asarray(ids_map).astype(str).astype(object))
    return np.asarray(text_index.get_indexer(raw.astype("string").to_numpy(dtype=object)))


def _categorical(frame: pd.DataFrame, column: str, sep: str | None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(row positions, category codes, categories) of every value set in ``column``."""
    raw = frame[column].reset_index(drop=True)
    text = raw.astype("string")
    tokens = text.str.split(sep, regex=False).explode() if sep is not None else text
    tokens = tokens.str.strip()
    tokens = tokens[tokens.notna() & (tokens.str.len() > 0)]
    categories = sorted(set(tokens.tolist()))
    codes = pd.Categorical(tokens, categories=categories).codes.astype(np.int64)
    return tokens.index.to_numpy(dtype=np.int64), codes, [str(c) for c in categories]


def _numeric(frame: pd.DataFrame, column: str, *, path: str, rows: str, kind: str
             ) -> tuple[np.ndarray, tuple[float, float]]:
    """A numeric column standardised with its own mean and population std (0 if constant)."""
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raw = raw.astype(np.int8)
    text = raw.astype("string").str.strip()
    empty = (raw.isna() | (text.str.len() == 0).fillna(True)).to_numpy(dtype=bool)
    if empty.any():
        row, count = _first(frame, empty)
        raise DataError(f"{kind} feature value is empty; a numeric column needs a number in "
                        f"every row{_count_note(count, rows)}", path=path, row=row,
                        column=column)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, count = _first(frame, bad)
        value = _plain(raw.to_numpy()[np.flatnonzero(bad)[0]])
        number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
        what = ("is not a finite number" if pd.notna(number) or str(value).strip().lower()
                == "nan" else "is not a number")
        raise DataError(f"{kind} feature value {_show(value)} {what}{_count_note(count, rows)}",
                        path=path, row=row, column=column)
    mean = float(values.mean())
    std = float(values.std())
    if np.ptp(values) == 0 or not std > 0:
        return np.zeros(len(values), dtype=np.float64), (mean, 0.0)
    return (values - mean) / std, (mean, std)


def read_features(path: str | os.PathLike[str], ids_map: np.ndarray | Sequence[Hashable], *,
                  id_column: str, categorical: Sequence[str] = (), numeric: Sequence[str] = (),
                  entity: Entity = "item", domain: str | None = None, sep: str | None = None,
                  multi_value_sep: str | None = "|", unknown_ids: UnknownIds = "error"
                  ) -> FeatureTable:
    """Read a feature file into a :class:`FeatureTable` aligned to ``ids_map``.

    ``ids_map`` lists the original ids in internal index order: ``data.user_ids`` for user
    features, ``data[domain].item_ids`` for item features; file ids are matched to them as the
    interaction readers read ids (integer ids by value, text ids by their exact text). The file
    needs a header naming ``id_column`` and every column of ``categorical`` (one-hot) and
    ``numeric`` (z-score over all the file's rows); its format comes from the suffix, ``sep``
    overrides the separator. Feature columns are laid out in the order given, categorical ones
    first. Entities without a row are all zeros with ``present`` False. ``unknown_ids="warn"``
    drops (with a ``DataWarning``) rows whose id the data does not hold instead of refusing
    them. ``domain`` only names the domain in messages. See the module docstring for the rules
    and errors.
    """
    if entity not in ENTITIES:
        raise ValueError(f"entity must be 'user' or 'item', got {entity!r}")
    if unknown_ids not in UNKNOWN_IDS:
        raise ValueError(f"unknown_ids must be 'error' or 'warn', got {unknown_ids!r}")
    categorical, numeric = [str(c) for c in categorical], [str(c) for c in numeric]
    _check_columns(id_column, categorical, numeric)
    ids_map = np.asarray(ids_map)
    file = Path(path)
    where = str(file)
    fmt, fsep = format_of(file, sep)
    frame, rows = read_file(file, fmt, fsep, header=True)
    header_row: int | None = None
    if fmt == "delimited":
        frame[ROW] = frame[ROW] + 1  # the header is row 1 of a feature file
        rows, header_row = ROWS_FEATURES, 1
    elif fmt == "parquet":
        rows = ROWS_TABLE
    else:
        rows = ROWS_LINES
    present_columns = [str(c) for c in frame.columns if c != ROW]
    frame.columns = [c if c == ROW else str(c) for c in frame.columns]
    have = ", ".join(repr(c) for c in present_columns)
    if id_column not in present_columns:
        raise DataError(f"no id column {id_column!r} (id_column) in the header; the file has "
                        f"columns {have}", path=where, row=header_row, column=id_column)
    missing = [(kind, c) for kind, names in (("categorical", categorical), ("numeric", numeric))
               for c in names if c not in present_columns]
    if missing:
        listed = ", ".join(f"{c!r} ({kind})" for kind, c in missing)
        raise DataError(f"feature column(s) {listed} not in the header; the file has columns "
                        f"{have}", path=where, row=header_row, column=missing[0][1])
    if len(frame) == 0:
        raise DataError("no data rows: a feature file needs one row per id", path=where)
    check_ids(frame, id_column, role=entity, path=where, rows=rows)
    pos = _positions(frame[id_column], ids_map)
    unknown = pos < 0
    if unknown.any():
        row, count = _first(frame, unknown)
        value = _plain(frame[id_column].to_numpy()[np.flatnonzero(unknown)[0]])
        scope = ("a user of the data (users are shared by every domain)" if entity == "user"
                 else "an item of the data" if domain is None else f"an item of domain {domain!r}")
        message = (f"{entity} id {_show(value)} is not {scope}: a feature row must belong to an "
                   f"id of the interactions")
        if unknown_ids == "error":
            raise DataError(f"{message}; set unknown_ids='warn' to drop such rows"
                            f"{_count_note(count, rows)}", path=where, row=row, column=id_column)
        warnings.warn(str(DataError(f"{message}; dropped {count} such row(s) (unknown_ids='warn'"
                                    f"; {rows})", path=where, row=row, column=id_column)),
                      DataWarning, stacklevel=2)
        frame = frame.loc[~unknown].reset_index(drop=True)
        pos = pos[~unknown]
        if len(frame) == 0:
            raise DataError("no data rows left: no id of the file is in the data", path=where)
    repeated = pd.Series(pos).duplicated(keep="first").to_numpy()
    if repeated.any():
        later = int(np.flatnonzero(repeated)[0])
        earlier = int(np.flatnonzero(pos == pos[later])[0])
        count = int(repeated.sum())
        value = _plain(frame[id_column].iloc[later])
        more = "" if count == 1 else f"; {count} repeated rows, the first is named"
        raise DataError(f"{entity} id {_show(value)} has two rows, row "
                        f"{int(frame[ROW].iloc[earlier])} and row {int(frame[ROW].iloc[later])}; "
                        f"a feature file has one row per id ({rows}{more})", path=where,
                        row=int(frame[ROW].iloc[later]), column=id_column)

    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []  # rows, cols, values
    names: list[str] = []
    for column in categorical:
        at, codes, categories = _categorical(frame, column, multi_value_sep)
        blocks.append((at, codes + len(names), None))
        names += [f"{column}={value}" for value in categories]
    scaling: dict[str, tuple[float, float]] = {}
    for column in numeric:
        values, scaling[column] = _numeric(frame, column, path=where, rows=rows, kind=entity)
        blocks.append((np.arange(len(frame)), np.full(len(frame), len(names)), values))
        names.append(column)
    table = np.zeros((len(ids_map), len(names)), dtype=np.float32)
    for at, cols, block in blocks:
        table[pos[at], cols] = 1.0 if block is None else block
    present = np.zeros(len(ids_map), dtype=bool)
    present[pos] = True
    return FeatureTable(torch.from_numpy(table), tuple(names), torch.from_numpy(present),
                        entity=entity, path=where, scaling=scaling)


# --------------------------------------------------------------------------------------------
# Attaching feature files to data
# --------------------------------------------------------------------------------------------

FeaturesArg = Mapping[str, DomainFeatures | Mapping[str, Any]]


def _spec(value: FeatureSpec | Mapping[str, Any], where: str) -> FeatureSpec:
    if isinstance(value, FeatureSpec):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: a feature file is given as FeatureSpec or a mapping of its "
                        f"keys, got {type(value).__name__}")
    accepted = [f.name for f in fields(FeatureSpec)]
    unknown = [k for k in value if k not in accepted]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; accepted: "
                         f"{', '.join(accepted)}")
    try:
        return FeatureSpec(**value)
    except TypeError as err:  # a required key is missing
        raise ValueError(f"{where}: {err}") from None


def _domain_features(value: DomainFeatures | Mapping[str, Any], where: str) -> DomainFeatures:
    if isinstance(value, DomainFeatures):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: give {{users: ..., items: ...}}, got {type(value).__name__}")
    unknown = [k for k in value if k not in ("users", "items")]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; accepted: "
                         "users, items")
    return DomainFeatures(**{k: None if v is None else _spec(v, f"{where}.{k}")
                             for k, v in value.items()})


def with_features(data: CrossDomainData, features: FeaturesArg, *,
                  root: str | os.PathLike[str] | None = None) -> CrossDomainData:
    """``data`` with the feature files of ``features`` (domain -> ``DomainFeatures``, or a
    mapping ``{"users": spec, "items": spec}`` whose specs are ``FeatureSpec`` or mappings of
    its keys) read and set as the domains' ``user_features`` / ``item_features``.

    User features are rows of the dataset-wide user index (every user of the data, whichever
    domain the file is given for); identical user specs given for several domains are read once
    and the domains share one table. Relative paths are read under ``root`` when given.
    """
    if isinstance(features, (str, os.PathLike)) or not isinstance(features, Mapping):
        raise TypeError("features must map a domain name to {users: ..., items: ...}")
    domains = dict(data.domains)
    shared: dict[FeatureSpec, FeatureTable] = {}
    for name, value in features.items():
        if name not in domains:
            raise ValueError(f"features are given for domain {name!r}, which dataset "
                           f"{data.name!r} does not have; it has {sorted(domains)}")
        spec = _domain_features(value, f"features.{name}")
        dom = domains[name]
        users = dom.user_features
        if spec.users is not None:
            key = spec.users.resolved(root)
            if key not in shared:
                shared[key] = _read_spec(key, data.user_ids, entity="user", domain=name)
            users = shared[key]
        items = dom.item_features
        if spec.items is not None:
            items = _read_spec(spec.items.resolved(root), dom.item_ids, entity="item",
                               domain=name)
        domains[name] = replace(dom, user_features=users, item_features=items)
    return data.replace_domains(domains)


def _read_spec(spec: FeatureSpec, ids_map: np.ndarray, *, entity: Entity, domain: str
               ) -> FeatureTable:
    return read_features(spec.path, ids_map, id_column=spec.id_column,
                         categorical=spec.categorical, numeric=spec.numeric, entity=entity,
                         domain=domain, sep=spec.sep, multi_value_sep=spec.multi_value_sep,
                         unknown_ids=spec.unknown_ids)
