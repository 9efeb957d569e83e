"""Data: readers for the public CDR datasets, validation, feature tables, and the in-memory
``CrossDomainData``."""

from cdrec.data.catalog import find_datasets, load_sample, sample_path, shipped_datasets
from cdrec.data.dataset import CrossDomainData, Domain, Interactions
from cdrec.data.features import (
    DomainFeatures,
    FeatureSpec,
    FeatureTable,
    read_features,
    with_features,
)
from cdrec.data.readers import (
    combine_sources,
    read_amazon_implicit_pair,
    read_amazon_json,
    read_amazon_ratings_csv,
    read_amazon_reviews,
    read_douban,
    read_table,
)
from cdrec.data.recbole import read_recbole
from cdrec.data.schema import DataError, DataWarning, MissingFileError
from cdrec.data.transforms import binarize, k_core

__all__ = [
    "CrossDomainData",
    "DataError",
    "DataWarning",
    "Domain",
    "DomainFeatures",
    "FeatureSpec",
    "FeatureTable",
    "Interactions",
    "MissingFileError",
    "binarize",
    "combine_sources",
    "find_datasets",
    "k_core",
    "load_sample",
    "read_amazon_implicit_pair",
    "read_amazon_json",
    "read_amazon_ratings_csv",
    "read_amazon_reviews",
    "read_douban",
    "read_features",
    "read_recbole",
    "read_table",
    "sample_path",
    "shipped_datasets",
    "with_features",
]
