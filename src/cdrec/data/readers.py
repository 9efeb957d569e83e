"""Readers: public cross-domain datasets and generic tables -> validated ``CrossDomainData``.

Every reader reads with pandas (vectorised), validates each file with
:func:`cdrec.data.schema.validate_interactions` (errors name file, row and column) and converts
once to tensors. The user index space is the union of the users of all domains (train and any
shipped test file), indexed in sorted order of the original ids; each domain's items are indexed
in sorted order of their original ids. Original ids are kept in ``user_ids`` / ``item_ids``.
Ids that are all integers (``"42"``) become int64 and sort numerically; Amazon ids stay text.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.features import FeaturesArg, with_features
from cdrec.data.files import check_field_count, find_file, format_of, read_delimited, read_file
from cdrec.data.schema import (
    MIXED_IDS,
    ROW,
    ROWS_LINES,
    ROWS_TABLE,
    DataError,
    IdSource,
    MissingFileError,
    check_ids,
    column_label,
    normalise_ids,
    require_columns,
    validate_interactions,
)

PathLike = str | os.PathLike[str]
MixedIds = Literal["warn", "error"]

_AMAZON_FIELDS = {"user": "reviewerID", "item": "asin", "rating": "overall",
                  "timestamp": "unixReviewTime"}
_AMAZON_TEXT = "reviewText"


# --------------------------------------------------------------------------------------------
# Assembling validated frames into CrossDomainData
# --------------------------------------------------------------------------------------------

@dataclass
class _Part:
    """One domain's validated rows (columns user, item, rating[, timestamp], ROW)."""

    train: pd.DataFrame
    path: str
    rating_scale: tuple[float, float] | None
    test: pd.DataFrame | None = None
    test_path: str | None = None
    test_rows: str = ROWS_LINES
    test_item_label: str = "item"
    extend_items: bool = False


def _interactions(users: np.ndarray, items: np.ndarray, frame: pd.DataFrame) -> Interactions:
    # torch.tensor copies: pandas may hand out read-only views.
    ts = None
    if "timestamp" in frame.columns:
        ts = torch.tensor(frame["timestamp"].to_numpy(dtype=np.int64), dtype=torch.int64)
    return Interactions(
        torch.tensor(users, dtype=torch.int64),
        torch.tensor(items, dtype=torch.int64),
        torch.tensor(frame["rating"].to_numpy(dtype=np.float32), dtype=torch.float32),
        ts,
    )


def _source(frame: pd.DataFrame, path: str | None, role: str, convention: str) -> IdSource:
    """Where ``frame``'s ``role`` ids were read: file, rows, the column's label (kept in
    ``attrs`` by ``validate_interactions``) and how its rows count."""
    rows = frame[ROW].to_numpy() if ROW in frame.columns else np.arange(1, len(frame) + 1)
    label = frame.attrs.get("labels", {}).get(role, role)
    return IdSource(path, rows, str(label), frame.attrs.get("rows", convention))


def _assemble(parts: Mapping[str, _Part], *, name: str, provenance: dict[str, str],
              ids: str = "auto", mixed_ids: str = "warn") -> CrossDomainData:
    user_parts: list[pd.Series] = []
    user_sources: list[IdSource] = []
    for part in parts.values():
        user_parts.append(part.train["user"])
        user_sources.append(_source(part.train, part.path, "user", ROWS_TABLE))
        if part.test is not None:
            user_parts.append(part.test["user"])
            user_sources.append(_source(part.test, part.test_path, "user", part.test_rows))
    all_users = normalise_ids(user_parts, ids, role="user", sources=user_sources,
                              mixed=mixed_ids)
    user_ids = np.unique(np.concatenate(all_users))
    user_arrays = iter(all_users)
    user_index = pd.Index(user_ids)

    domains: dict[str, Domain] = {}
    for dom, part in parts.items():
        train_users = next(user_arrays)
        test_users = next(user_arrays) if part.test is not None else None
        item_parts = [part.train["item"]] + ([part.test["item"]] if part.test is not None else [])
        item_sources = [_source(part.train, part.path, "item", ROWS_TABLE)]
        if part.test is not None:
            item_sources.append(_source(part.test, part.test_path, "item", part.test_rows))
        item_arrays = normalise_ids(item_parts, ids, role="item", sources=item_sources,
                                    mixed=mixed_ids)
        item_ids = np.unique(item_arrays[0])
        given_test = None
        if part.test is not None:
            unseen = pd.Index(item_ids).get_indexer(item_arrays[1]) < 0
            if unseen.any():
                if not part.extend_items:
                    first = int(np.flatnonzero(unseen)[0])
                    raise DataError(
                        f"test item {item_arrays[1][first]!r} does not occur in the training file "
                        f"{part.path} ({int(unseen.sum())} such rows; {part.test_rows})",
                        path=part.test_path, row=int(part.test[ROW].iloc[first]),
                        column=part.test_item_label)
                # Items seen only in the test file are appended after the training items, so the
                # training items keep the same indices whichever test file is read.
                item_ids = np.concatenate([item_ids, np.unique(item_arrays[1][unseen])])
        item_index = pd.Index(item_ids)
        interactions = _interactions(user_index.get_indexer(train_users),
                                     item_index.get_indexer(item_arrays[0]), part.train)
        if part.test is not None:
            given_test = _interactions(user_index.get_indexer(test_users),
                                       item_index.get_indexer(item_arrays[1]), part.test)
        domains[dom] = Domain(dom, item_ids, interactions, part.rating_scale, given_test)
    return CrossDomainData(user_ids, domains, name=name, provenance=provenance)


def _paths(files: Mapping[str, PathLike]) -> dict[str, Path]:
    if isinstance(files, (str, os.PathLike)) or not isinstance(files, Mapping):
        raise TypeError("files must be a dict {domain_name: path}")
    if not files:
        raise ValueError("files is empty: give at least one {domain_name: path}")
    return {str(dom): Path(p) for dom, p in files.items()}


def _check_mixed(mixed_ids: str) -> str:
    if mixed_ids not in MIXED_IDS:
        raise ValueError(f"mixed_ids must be 'warn' or 'error', got {mixed_ids!r}")
    return mixed_ids


def _check_scale(rating_scale: tuple[float, float] | None) -> tuple[float, float] | None:
    if rating_scale is None:
        return None
    low, high = (float(v) for v in rating_scale)
    if not low < high:
        raise ValueError(f"rating_scale must be (low, high) with low < high, got {rating_scale}")
    return (low, high)


# --------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------

def read_douban(directory: PathLike, domains: Sequence[str] = ("book", "music"),
                rating_scale: tuple[float, float] | None = (1, 5),
                mixed_ids: MixedIds = "warn") -> CrossDomainData:
    """Douban (GA-DTCDR release): ``{domain}_ratings.tsv.gz`` (or ``.tsv``) per domain.

    Each file is TSV without header, ``user<TAB>item<TAB>rating``; user ids are shared across
    the files, item ids are per domain. ``mixed_ids``: see :func:`read_table`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError("Douban directory not found", path=str(directory))
    scale = _check_scale(rating_scale)
    _check_mixed(mixed_ids)
    columns = {"user": 0, "item": 1, "rating": 2, "timestamp": None}
    parts: dict[str, _Part] = {}
    for dom in domains:
        path = find_file(directory, [f"{dom}_ratings.tsv.gz", f"{dom}_ratings.tsv"])
        frame, rows = read_delimited(path, "\t", header=False)
        check_field_count(frame, 3, "user, item, rating", path)
        train = validate_interactions(frame, columns, path=str(path), rows=rows,
                                      rating_scale=scale, header=False, domain=dom)
        parts[dom] = _Part(train, str(path), scale)
    provenance = {"reader": "read_douban", "directory": str(directory),
                  "files": ", ".join(Path(p.path).name for p in parts.values())}
    return _assemble(parts, name="douban", provenance=provenance, mixed_ids=mixed_ids)


def read_amazon_implicit_pair(root: PathLike, a: str, b: str,
                              test_file: str | None = "test",
                              mixed_ids: MixedIds = "warn") -> CrossDomainData:
    """One DisenCDR-style Amazon pair: folder ``root/a_b`` is domain ``a``, ``root/b_a`` is ``b``.

    ``train.txt.gz`` (or ``.txt``) gives the interactions (implicit: rating 1, ``rating_scale``
    None). ``test_file`` picks the leave-one-out file put in ``Domain.given_test``: ``"test"``
    (every test item must occur in training, else ``DataError``), ``"test_original"`` (test-only
    items are appended to the item space after the training items) or ``None`` (no test).
    ``mixed_ids``: see :func:`read_table`.
    """
    if test_file not in ("test", "test_original", None):
        raise ValueError(f"test_file must be 'test', 'test_original' or None, got {test_file!r}")
    _check_mixed(mixed_ids)
    root = Path(root)
    columns = {"user": 0, "item": 1, "rating": 2, "timestamp": None}
    parts: dict[str, _Part] = {}
    for dom, folder in ((a, f"{a}_{b}"), (b, f"{b}_{a}")):
        directory = root / folder
        if not directory.is_dir():
            raise MissingFileError(f"pair folder for domain {dom!r} not found",
                                   path=str(directory))
        path = find_file(directory, ["train.txt.gz", "train.txt"])
        frame, rows = read_delimited(path, "\t", header=False)
        check_field_count(frame, 3, "user, item, 1", path)
        train = validate_interactions(frame, columns, path=str(path), rows=rows,
                                      rating_scale=None, header=False, domain=dom)
        part = _Part(train, str(path), None)
        if test_file is not None:
            tpath = find_file(directory, [f"{test_file}.txt.gz", f"{test_file}.txt"])
            tframe, trows = read_delimited(tpath, "\t", header=False)
            check_field_count(tframe, 3, "user, item, 1", tpath)
            part.test = validate_interactions(tframe, columns, path=str(tpath), rows=trows,
                                              rating_scale=None, header=False, domain=dom)
            part.test_path, part.test_rows = str(tpath), trows
            part.test_item_label = column_label(1, "item", False)
            part.extend_items = test_file == "test_original"
        parts[dom] = part
    provenance = {"reader": "read_amazon_implicit_pair", "root": str(root),
                  "folders": f"{a}_{b}, {b}_{a}", "test_file": str(test_file)}
    return _assemble(parts, name=f"amazon_implicit/{a}_{b}", provenance=provenance,
                     mixed_ids=mixed_ids)


def read_table(path_or_paths: PathLike | Mapping[str, PathLike], *,
               user: Hashable = "user", item: Hashable = "item",
               rating: Hashable | None = "rating", timestamp: Hashable | None = None,
               domain: Hashable | None = None,
               rating_scale: tuple[float, float] | None = (1, 5),
               sep: str | None = None, header: bool = True,
               name: str | None = None, mixed_ids: MixedIds = "warn",
               features: FeaturesArg | None = None) -> CrossDomainData:
    """A generic CSV / TSV / Parquet / JSON-lines table (format by suffix, ``.gz`` allowed).

    Either one file with a domain column (``domain="colname"``; one domain per distinct value),
    one file without (a single domain named after the file), or a dict ``{domain_name: path}``
    (one file per domain). ``user``/``item``/``rating``/``timestamp`` name the columns; with
    ``header=False`` give them as 0-based positions. ``rating=None``: implicit feedback (all 1,
    ``rating_scale`` ignored). ``rating_scale=None`` with a rating column: implicit, every value
    must be 1. ``sep`` overrides the separator guessed from the suffix.

    Ids that are all integers become int64 (sorted as numbers); otherwise every id is text.
    Integers mixed with text (one ``"alice"`` among numbers) would silently make every id text
    and so change seeded splits: ``mixed_ids="warn"`` (default) reads them as text with a
    ``DataWarning`` naming the count and the first odd row, ``"error"`` raises a ``DataError``.

    ``features`` maps domain names to their feature files, ``{"users": spec, "items": spec}``
    (either optional; a spec is a :class:`cdrec.data.features.FeatureSpec` or a dict of its
    keys), read after the interactions with :func:`cdrec.data.features.with_features`: user
    features are rows of the shared user index, and one user file given for several domains is
    read once and shared.
    """
    scale = None if rating is None else _check_scale(rating_scale)
    _check_mixed(mixed_ids)
    columns = {"user": user, "item": item, "rating": rating, "timestamp": timestamp}
    parts: dict[str, _Part] = {}
    if isinstance(path_or_paths, Mapping):
        if domain is not None:
            raise ValueError("give either a dict {domain_name: path} or domain='column', not both")
        files = _paths(path_or_paths)
    else:
        path = Path(path_or_paths)
        files = {path.name.split(".")[0]: path}
    for dom, path in files.items():
        fmt, fsep = format_of(path, sep)
        frame, rows = read_file(path, fmt, fsep, header)
        has_header = header or fmt != "delimited"
        if domain is None:
            parts[dom] = _Part(validate_interactions(frame, columns, path=str(path), rows=rows,
                                                     rating_scale=scale, header=has_header,
                                                     domain=dom), str(path), scale)
            continue
        label = column_label(domain, "domain", has_header)
        require_columns(frame, {**columns, "domain": domain}, path=str(path), header=has_header)
        check_ids(frame, domain, role="domain", path=str(path), rows=rows, label=label)
        values = frame[domain].astype("string")
        for value in sorted(values.unique().tolist()):
            sub = frame.loc[(values == value).to_numpy()].reset_index(drop=True)
            parts[str(value)] = _Part(
                validate_interactions(sub, columns, path=str(path), rows=rows,
                                      rating_scale=scale, header=has_header, domain=str(value)),
                str(path), scale)
        if not parts:
            raise DataError("no data rows", path=str(path))
    provenance = {"reader": "read_table", "files": ", ".join(str(p) for p in files.values())}
    if domain is not None:
        provenance["domain_column"] = str(domain)
    default_name = next(iter(files)) if len(files) == 1 else "table"
    data = _assemble(parts, name=name or default_name, provenance=provenance,
                     mixed_ids=mixed_ids)
    return data if not features else with_features(data, features)


def read_amazon_ratings_csv(files: Mapping[str, PathLike]) -> CrossDomainData:
    """Amazon "ratings only" CSVs (McAuley): no header, ``user,item,rating,timestamp``, 1..5.

    ``files`` maps domain names to paths (gzip or plain). Ids are kept as text.
    """
    columns = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    parts: dict[str, _Part] = {}
    for dom, path in _paths(files).items():
        frame, rows = read_delimited(path, ",", header=False)
        check_field_count(frame, 4, "user, item, rating, timestamp", path)
        train = validate_interactions(frame, columns, path=str(path), rows=rows,
                                      rating_scale=(1.0, 5.0), header=False, domain=dom)
        parts[dom] = _Part(train, str(path), (1.0, 5.0))
    provenance = {"reader": "read_amazon_ratings_csv",
                  "files": ", ".join(p.path for p in parts.values())}
    return _assemble(parts, name="amazon_ratings", provenance=provenance, ids="str")


@overload
def read_amazon_reviews(files: Mapping[str, PathLike], keep_text: Literal[False] = False
                        ) -> CrossDomainData: ...
@overload
def read_amazon_reviews(files: Mapping[str, PathLike], keep_text: Literal[True]
                        ) -> tuple[CrossDomainData, dict[str, pd.Series]]: ...
@overload
def read_amazon_reviews(files: Mapping[str, PathLike], keep_text: bool
                        ) -> CrossDomainData | tuple[CrossDomainData, dict[str, pd.Series]]: ...
def read_amazon_reviews(files: Mapping[str, PathLike], keep_text: bool = False
                        ) -> CrossDomainData | tuple[CrossDomainData, dict[str, pd.Series]]:
    """Amazon review files (McAuley 2014 fields), JSON lines or CSV with a header, by suffix.

    Uses ``reviewerID`` (user), ``asin`` (item), ``overall`` (rating 1..5) and
    ``unixReviewTime`` (timestamp). With ``keep_text=True`` returns ``(data, texts)`` where
    ``texts[domain]`` is a ``pandas.Series`` of ``reviewText`` whose i-th entry belongs to the
    domain's i-th interaction row (missing text is ``""``).
    """
    parts: dict[str, _Part] = {}
    texts: dict[str, pd.Series] = {}
    keep = [_AMAZON_TEXT] if keep_text else []
    for dom, path in _paths(files).items():
        fmt, sep = format_of(path, None)
        if fmt == "parquet":
            raise DataError("Amazon review files are JSON lines or CSV", path=str(path))
        frame, rows = read_file(path, fmt, sep, header=True)
        if keep_text and _AMAZON_TEXT not in frame.columns:
            require_columns(frame, {**_AMAZON_FIELDS, "text": _AMAZON_TEXT}, path=str(path))
        train = validate_interactions(frame, _AMAZON_FIELDS, path=str(path), rows=rows,
                                      rating_scale=(1.0, 5.0), domain=dom, keep=keep)
        if keep_text:
            texts[dom] = (train[_AMAZON_TEXT].astype("string").fillna("")
                          .reset_index(drop=True).rename(_AMAZON_TEXT))
            train = train.drop(columns=[_AMAZON_TEXT])
        parts[dom] = _Part(train, str(path), (1.0, 5.0))
    provenance = {"reader": "read_amazon_reviews",
                  "files": ", ".join(p.path for p in parts.values())}
    data = _assemble(parts, name="amazon_reviews", provenance=provenance, ids="str")
    return (data, texts) if keep_text else data


@overload
def read_amazon_json(files: Mapping[str, PathLike], keep_text: Literal[False] = False
                     ) -> CrossDomainData: ...
@overload
def read_amazon_json(files: Mapping[str, PathLike], keep_text: Literal[True]
                     ) -> tuple[CrossDomainData, dict[str, pd.Series]]: ...
@overload
def read_amazon_json(files: Mapping[str, PathLike], keep_text: bool
                     ) -> CrossDomainData | tuple[CrossDomainData, dict[str, pd.Series]]: ...
def read_amazon_json(files: Mapping[str, PathLike], keep_text: bool = False
                     ) -> CrossDomainData | tuple[CrossDomainData, dict[str, pd.Series]]:
    """Amazon 5-core JSON lines (``reviewerID, asin, overall, reviewText, unixReviewTime``).

    Gzip or plain. Same result as :func:`read_amazon_reviews`, which also reads the CSV form.
    """
    for path in _paths(files).values():
        if format_of(path, None)[0] != "jsonl":
            raise DataError("read_amazon_json reads JSON lines (.json / .jsonl, optionally .gz); "
                            "use read_amazon_reviews for CSV review files", path=str(path))
    return read_amazon_reviews(files, keep_text=keep_text)
