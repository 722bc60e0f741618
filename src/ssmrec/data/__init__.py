"""Data layer: read interaction files, clean and split them, cache the result.

Entry point: ``load_dataset(DataSpec(dataset="gowalla"))`` or ``load_dataset(DataSpec(path=...))``;
the result is an immutable ``Interactions`` that models, training and evaluation share.
"""

from ssmrec.data.info import describe
from ssmrec.data.interactions import DataReport, Interactions, pairs_to_csr
from ssmrec.data.readers import (
    RawData,
    RawSplit,
    read_atomic,
    read_csv,
    read_lightgcn,
    read_lightgcn_file,
    read_pairs,
    read_pairs_file,
    read_triples,
    read_triples_file,
)
from ssmrec.data.registry import REGISTRY
from ssmrec.data.spec import DataSpec, load_dataset, load_dataset_name, load_dataset_path

__all__ = [
    "REGISTRY",
    "DataReport",
    "DataSpec",
    "Interactions",
    "RawData",
    "RawSplit",
    "describe",
    "load_dataset",
    "load_dataset_name",
    "load_dataset_path",
    "pairs_to_csr",
    "read_atomic",
    "read_csv",
    "read_lightgcn",
    "read_lightgcn_file",
    "read_pairs",
    "read_pairs_file",
    "read_triples",
    "read_triples_file",
]
