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
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import torch

from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.features import FeaturesArg, with_features
from cdrec.data.files import check_field_count, find_file, format_of, read_delimited, read_file
from cdrec.data.schema import (
    DUPLICATES,
    FILE,
    MIXED_IDS,
    ROW,
    ROWS_LINES,
    ROWS_TABLE,
    DataError,
    DataWarning,
    IdSource,
    MissingFileError,
    check_ids,
    column_label,
    drop_duplicate_pairs,
    normalise_ids,
    require_columns,
    validate_interactions,
)

PathLike = str | os.PathLike[str]
MixedIds = Literal["warn", "error"]
Duplicates = Literal["last", "first", "error"]

_AMAZON_FIELDS = {"user": "reviewerID", "item": "asin", "rating": "overall",
                  "timestamp": "unixReviewTime"}
_AMAZON_TEXT = "reviewText"


# --------------------------------------------------------------------------------------------
# Assembling validated frames into CrossDomainData
# --------------------------------------------------------------------------------------------

@dataclass
class _Part:
    """One domain's validated rows (columns user, item, rating[, timestamp], ROW).

    A domain read from several files: ``path`` lists them, ``paths`` holds them and the
    ``FILE`` column of ``train`` gives each row's file (an index into ``paths``).
    """

    train: pd.DataFrame
    path: str
    rating_scale: tuple[float, float] | None
    test: pd.DataFrame | None = None
    test_path: str | None = None
    test_rows: str = ROWS_LINES
    test_item_label: str = "item"
    extend_items: bool = False
    paths: list[str] | None = None


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


def _source(frame: pd.DataFrame, path: str | None, role: str, convention: str,
            paths: list[str] | None = None) -> IdSource:
    """Where ``frame``'s ``role`` ids were read: file (each row's, when ``paths`` lists the
    files it was concatenated from), rows, the column's label (kept in ``attrs`` by
    ``validate_interactions``) and how its rows count."""
    rows = frame[ROW].to_numpy() if ROW in frame.columns else np.arange(1, len(frame) + 1)
    label = frame.attrs.get("labels", {}).get(role, role)
    if paths is not None and FILE in frame.columns:
        return IdSource(path, rows, str(label), frame.attrs.get("rows", convention),
                        files=tuple(paths), file_of=frame[FILE].to_numpy())
    return IdSource(path, rows, str(label), frame.attrs.get("rows", convention))


def _assemble(parts: Mapping[str, _Part], *, name: str, provenance: dict[str, str],
              ids: str = "auto", mixed_ids: str = "warn") -> CrossDomainData:
    user_parts: list[pd.Series] = []
    user_sources: list[IdSource] = []
    for part in parts.values():
        user_parts.append(part.train["user"])
        user_sources.append(_source(part.train, part.path, "user", ROWS_TABLE, part.paths))
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
        item_sources = [_source(part.train, part.path, "item", ROWS_TABLE, part.paths)]
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


def _check_duplicates(duplicates: str) -> str:
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {', '.join(map(repr, DUPLICATES))}, got "
                         f"{duplicates!r}")
    return duplicates


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
                mixed_ids: MixedIds = "warn", duplicates: Duplicates = "last") -> CrossDomainData:
    """Douban (GA-DTCDR release): ``{domain}_ratings.tsv.gz`` (or ``.tsv``) per domain.

    Each file is TSV without header, ``user<TAB>item<TAB>rating``; user ids are shared across
    the files, item ids are per domain. ``mixed_ids`` and ``duplicates``: see :func:`read_table`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError("Douban directory not found", path=str(directory))
    scale = _check_scale(rating_scale)
    _check_mixed(mixed_ids)
    _check_duplicates(duplicates)
    columns = {"user": 0, "item": 1, "rating": 2, "timestamp": None}
    parts: dict[str, _Part] = {}
    for dom in domains:
        path = find_file(directory, [f"{dom}_ratings.tsv.gz", f"{dom}_ratings.tsv"])
        frame, rows = read_delimited(path, "\t", header=False)
        check_field_count(frame, 3, "user, item, rating", path)
        train = validate_interactions(frame, columns, path=str(path), rows=rows,
                                      rating_scale=scale, header=False, domain=dom,
                                      duplicates=duplicates)
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


def read_table(path_or_paths: PathLike | Mapping[str, PathLike | Sequence[PathLike]], *,
               user: Hashable = "user", item: Hashable = "item",
               rating: Hashable | None = "rating", timestamp: Hashable | None = None,
               domain: Hashable | None = None,
               rating_scale: tuple[float, float] | None = (1, 5),
               sep: str | None = None, header: bool = True,
               name: str | None = None, mixed_ids: MixedIds = "warn",
               duplicates: Duplicates = "last",
               features: FeaturesArg | None = None) -> CrossDomainData:
    """A generic CSV / TSV / Parquet / JSON-lines table (format by suffix, ``.gz`` allowed).

    Either one file with a domain column (``domain="colname"``; one domain per distinct value),
    one file without (a single domain named after the file), or a dict ``{domain_name: path}``
    (one file per domain, or a list of files whose rows are concatenated, in the order given,
    into the domain: a dataset shipped in parts, such as validation + test files).
    ``user``/``item``/``rating``/``timestamp`` name the columns (the same in every file); with
    ``header=False`` give them as 0-based positions. ``rating=None``: implicit feedback (all 1,
    ``rating_scale`` ignored). ``rating_scale=None`` with a rating column: implicit, every value
    must be 1. ``sep`` overrides the separator guessed from the suffix.

    ``duplicates`` says what a repeated ``(user, item)`` pair of a domain becomes, within a file
    or across the files of a domain: ``"last"`` (default) keeps its last row, ``"first"`` its
    first (files in the order given), each with a ``DataWarning`` counting the rows dropped;
    ``"error"`` refuses the data, naming the file and row of the repeat and of the row it
    repeats. Each file is checked on its own first, so every error names its file.

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
    _check_duplicates(duplicates)
    columns = {"user": user, "item": item, "rating": rating, "timestamp": timestamp}
    parts: dict[str, _Part] = {}
    if isinstance(path_or_paths, Mapping):
        if domain is not None:
            raise ValueError("give either a dict {domain_name: path} or domain='column', not both")
        files = _path_lists(path_or_paths)
    else:
        path = Path(path_or_paths)
        files = {path.name.split(".")[0]: [path]}

    def validated(frame: pd.DataFrame, path: Path, rows: str, has_header: bool,
                  dom: str) -> pd.DataFrame:
        return validate_interactions(frame, columns, path=str(path), rows=rows,
                                     rating_scale=scale, header=has_header, domain=dom,
                                     duplicates=duplicates)

    def read_one(path: Path, dom: str) -> pd.DataFrame:
        fmt, fsep = format_of(path, sep)
        frame, rows = read_file(path, fmt, fsep, header)
        return validated(frame, path, rows, header or fmt != "delimited", dom)

    for dom, paths in files.items():
        if len(paths) > 1:
            parts[dom] = _concatenated(dom, paths, read_one, duplicates, scale)
            continue
        path = paths[0]
        if domain is None:
            parts[dom] = _Part(read_one(path, dom), str(path), scale)
            continue
        fmt, fsep = format_of(path, sep)
        frame, rows = read_file(path, fmt, fsep, header)
        has_header = header or fmt != "delimited"
        label = column_label(domain, "domain", has_header)
        require_columns(frame, {**columns, "domain": domain}, path=str(path), header=has_header)
        check_ids(frame, domain, role="domain", path=str(path), rows=rows, label=label)
        values = frame[domain].astype("string")
        for value in sorted(values.unique().tolist()):
            sub = frame.loc[(values == value).to_numpy()].reset_index(drop=True)
            parts[str(value)] = _Part(validated(sub, path, rows, has_header, str(value)),
                                      str(path), scale)
        if not parts:
            raise DataError("no data rows", path=str(path))
    provenance = {"reader": "read_table",
                  "files": ", ".join(str(p) for paths in files.values() for p in paths)}
    if domain is not None:
        provenance["domain_column"] = str(domain)
    if duplicates != "last":
        provenance["duplicates"] = duplicates
    default_name = next(iter(files)) if len(files) == 1 else "table"
    data = _assemble(parts, name=name or default_name, provenance=provenance,
                     mixed_ids=mixed_ids)
    return data if not features else with_features(data, features)


def _path_lists(files: Mapping[str, PathLike | Sequence[PathLike]]) -> dict[str, list[Path]]:
    """``{domain: path or [paths]}`` as ``{domain: [Path, ...]}``; refuses empty lists and a file
    listed twice for one domain (its every row would be a duplicate pair)."""
    if isinstance(files, (str, os.PathLike)) or not isinstance(files, Mapping):
        raise TypeError("files must be a dict {domain_name: path or [paths]}")
    if not files:
        raise ValueError("files is empty: give at least one {domain_name: path}")
    out: dict[str, list[Path]] = {}
    for dom, given in files.items():
        paths = ([Path(given)] if isinstance(given, (str, os.PathLike))
                 else [Path(p) for p in given])
        if not paths:
            raise ValueError(f"files: domain {dom!r} has an empty list of files")
        twice = sorted({str(p) for p in paths if paths.count(p) > 1})
        if twice:
            raise ValueError(f"files: domain {dom!r} lists {', '.join(twice)} more than once")
        out[str(dom)] = paths
    return out


def _concatenated(dom: str, paths: list[Path],
                  read_one: Callable[[Path, str], pd.DataFrame], duplicates: str,
                  scale: tuple[float, float] | None) -> _Part:
    """One domain from several files: each read and validated on its own by ``read_one``
    (errors name their file), then their rows concatenated in the order given, with a ``FILE``
    column giving each row's file; a pair repeated across the files is kept or refused as
    ``duplicates`` says. The files must count rows alike (one format), as messages name rows
    with one convention per domain."""
    frames = []
    for index, path in enumerate(paths):
        one = read_one(path, dom)
        one[FILE] = index
        frames.append(one)
    conventions = [str(f.attrs["rows"]) for f in frames]
    odd = next((i for i, c in enumerate(conventions) if c != conventions[0]), None)
    if odd is not None:
        raise DataError(f"domain {dom!r} is read from files of different formats: {paths[0]} "
                        f"({conventions[0]}) and this one ({conventions[odd]}); give one format",
                        path=str(paths[odd]))
    train = pd.concat(frames, ignore_index=True)
    train.attrs.update(frames[0].attrs)  # the rows convention and column labels, as each file's
    names = [str(p) for p in paths]
    train = drop_duplicate_pairs(train, path=names[0], rows=conventions[0], domain=dom,
                                 keep=duplicates, paths=names)
    return _Part(train.reset_index(drop=True), ", ".join(names), scale, paths=names)


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


# --------------------------------------------------------------------------------------------
# Several sources, one dataset
# --------------------------------------------------------------------------------------------

def combine_sources(sources: Sequence[CrossDomainData], labels: Sequence[str] | None = None,
                    name: str | None = None) -> CrossDomainData:
    """The domains of several datasets (each read by its own reader) as one ``CrossDomainData``.

    For datasets whose domains come in different layouts but share users, such as Douban Book
    and Music in ``read_douban``'s layout plus a Douban Movie table. **Users are matched by
    their original ids**: user ``42`` of every source is one user. The user index is the
    sorted union of the sources' original ids (as each reader indexes its own users), so a
    source's internal user indices may change; each domain keeps its items, their order and
    its rows (``given_test`` too). Domains come in the order of the sources, then of each
    source's domains.

    Refused, with a ``DataError`` naming the sources (``labels``, one per source; by default
    the files each one's provenance names):

    * a domain name given by two sources;
    * user ids that are integers in one source and text in another: readers read ids that are
      all integers as int64 and others as text, and ``42`` never equals ``"42"``, so such users
      would silently not match (make the ids one type, e.g. the same reader options);
    * a domain carrying ``user_features``, whose rows follow its source's user index: attach
      user features after combining (:func:`cdrec.data.features.with_features`).

    A source sharing no user with the others gets a ``DataWarning`` (ids from unrelated
    numberings, such as two Amazon pairs, match by accident or not at all).
    """
    if not sources:
        raise ValueError("combine_sources needs at least one dataset")
    names = (list(labels) if labels is not None
             else [f"source {source_label(data)}" for data in sources])
    if len(names) != len(sources):
        raise ValueError(f"{len(names)} labels for {len(sources)} sources")
    owner: dict[str, int] = {}
    for i, data in enumerate(sources):
        for dom in data.domains:
            if dom in owner:
                raise DataError(f"domain {dom!r} is given by two sources: {names[owner[dom]]} "
                                f"and {names[i]}; a domain comes from one source (list several "
                                f"files for it in that source), so rename one of them")
            owner[dom] = i
        if any(d.user_features is not None for d in data.domains.values()):
            raise DataError(f"{names[i]} carries user features; combine the sources first, then "
                            f"attach user features to the combined data")
    kinds = [_id_kind(data.user_ids) for data in sources]
    if len(set(kinds)) > 1:
        a, b = 0, next(i for i, kind in enumerate(kinds) if kind != kinds[0])
        raise DataError(
            f"user ids are {kinds[a]} in {names[a]} (e.g. {_first_id(sources[a])!r}) but "
            f"{kinds[b]} in {names[b]} (e.g. {_first_id(sources[b])!r}); users are matched "
            f"across sources by their original ids, and ids of two types never match: make "
            f"the user ids one type in every source")
    user_ids = np.unique(np.concatenate([data.user_ids for data in sources]))
    index = pd.Index(user_ids)
    domains: dict[str, Domain] = {}
    for i, data in enumerate(sources):
        if len(sources) > 1:
            others = np.concatenate([d.user_ids for j, d in enumerate(sources) if j != i])
            if not np.isin(data.user_ids, others).any():
                warnings.warn(f"{names[i]} shares no user id with the other sources; users are "
                              f"matched by their original ids", DataWarning, stacklevel=2)
        new_index = torch.as_tensor(index.get_indexer(data.user_ids), dtype=torch.int64)
        for dom_name, domain in data.domains.items():
            inter = domain.interactions
            test = domain.given_test
            domains[dom_name] = replace(
                domain, interactions=replace(inter, user=new_index[inter.user]),
                given_test=None if test is None else replace(test, user=new_index[test.user]))
    provenance = {"reader": "combine_sources", "sources": "; ".join(names)}
    for i, data in enumerate(sources):
        provenance.update({f"source{i}.{key}": value for key, value in data.provenance.items()})
    return CrossDomainData(user_ids, domains, name=name or "+".join(d.name for d in sources),
                           provenance=provenance)


def source_label(data: CrossDomainData) -> str:
    """A dataset as messages name it: its name and where it was read (folder, files)."""
    where = [data.provenance[key] for key in ("directory", "root", "folders", "files")
             if key in data.provenance]
    return f"{data.name!r}" + (f" ({'; '.join(where)})" if where else "")


def _id_kind(ids: np.ndarray) -> str:
    if np.issubdtype(ids.dtype, np.integer):
        return "integers"
    if ids.dtype == object or np.issubdtype(ids.dtype, np.str_):
        return "text"
    return str(ids.dtype)


def _first_id(data: CrossDomainData) -> object:
    first = data.user_ids[0]
    return first.item() if isinstance(first, np.generic) else first
