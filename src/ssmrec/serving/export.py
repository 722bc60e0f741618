"""``ssmrec export``: a trained run's representations, ids and seen items in one portable file.

What ranking uses is exported, not the ego tables: the final user and item representations after
propagation (:meth:`ssmrec.models.Recommender.representations`), the ranking rule of the run, the id
maps (so everything speaks the dataset's own ids), each user's seen items (the training and
validation interactions: exactly what evaluation on the test split excludes) and the run's
fingerprint (data file hashes, config and weight sha256s, metrics). Models that can encode a new user
from its items (LightGCN, history) also carry what that needs (:mod:`ssmrec.serving.foldin`).

Three formats, the same arrays (layout in the README, "Export file layout"); nothing is pickled:

* ``npz`` (default): numpy arrays; ``metadata`` is a uint8 array of UTF-8 JSON;
* ``safetensors``: the same arrays as tensors, the metadata JSON in the header under ``ssmrec``;
* ``parquet`` (needs pyarrow, ``pip install ssmrec[export]``): a folder with ``users.parquet``,
  ``items.parquet`` (one row per user / item: index, id, embedding, ...) and ``metadata.json``.

Read any of them with :func:`load`. Files are written to a temporary name and renamed, so a failed
export never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ssmrec import __version__
from ssmrec.errors import SsmrecError
from ssmrec.serving import _run
from ssmrec.serving.foldin import FoldIn, foldin_from_model, foldin_unsupported

FORMAT = "ssmrec-export"
FORMAT_VERSION = 1
FORMATS = ("npz", "parquet", "safetensors")
SUFFIXES = {"npz": ".npz", "safetensors": ".safetensors", "parquet": ".parquet"}

ID_MAPS_HELP = (
    "has no id_maps.json: it was trained by an ssmrec older than the one that records the dataset's "
    "own user and item ids in every run directory (ssmrec 0.1.0 from commit bd7f5f5 on). "
    "Re-create the run by training it again with this ssmrec (its settings are in config.json), "
    "then export that run"
)


class IdMap:
    """Index <-> original id of users or items. Ids are all integers or all strings.

    Lookups take the id as given or as text (``"17"`` finds integer id 17), so ids from a command line,
    a URL and JSON all work.
    """

    def __init__(self, ids: Sequence[Any] | np.ndarray, what: str) -> None:
        values = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        self.what = what
        self.integer = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        self.values: list[Any] = values if self.integer else [str(v) for v in values]
        self._index = {str(v): i for i, v in enumerate(self.values)}
        if len(self._index) != len(self.values):
            raise SsmrecError(f"the {what} ids are not unique")

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int:
        """The index of original id ``value``; :class:`UnknownIdError` when there is none."""
        found = self._index.get(str(value))
        if found is None:
            raise UnknownIdError(f"unknown {self.what} id {value!r}")
        return found

    def indices(self, values: Sequence[Any]) -> np.ndarray:
        return np.array([self.index(v) for v in values], dtype=np.int64)

    @cached_property
    def json(self) -> list[str]:
        """Each id as a JSON fragment (precomputed: recommendations are written by joining them)."""
        return [str(v) if self.integer else json.dumps(v) for v in self.values]

    def as_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.int64) if self.integer else np.asarray(self.values, dtype=str)


class UnknownIdError(SsmrecError):
    """A user or item id is not in the run's id maps (the server answers 404)."""


@dataclass(frozen=True)
class Export:
    """A trained model ready to rank: representations, rule, ids, seen items, fingerprint."""

    users: np.ndarray  # (n_users, d) float32: final representations
    items: np.ndarray  # (n_items, d) float32
    user_ids: IdMap
    item_ids: IdMap
    seen: sp.csr_matrix  # users x items: never recommended unless asked
    metadata: dict[str, Any] = field(default_factory=dict)
    foldin: FoldIn | None = None

    @property
    def ranking_rule(self) -> str:
        return str(self.metadata["ranking_rule"])

    @property
    def similarity(self) -> str:
        """What similar items are ranked by: the similarity the model was trained with, else its rule."""
        return str(self.metadata["similarity"])

    @property
    def warnings(self) -> list[str]:
        return list(self.metadata.get("warnings", []))

    def seen_items(self, user: int) -> np.ndarray:
        return self.seen.indices[self.seen.indptr[user] : self.seen.indptr[user + 1]]


# ------------------------------------------------------------------------------ from a run directory


def cosine_dot_warning(trained: str | None, rule: str) -> str | None:
    """The warning for a model trained with cosine similarity that ranks by the raw inner product."""
    if trained == "cosine" and rule == "dot":
        return (
            "this model was trained with cosine similarity but its run ranks by the inner product "
            "(rank_by=dot, the SSM paper's evaluation): representation norms, which grow with item "
            "popularity under LightGCN, take part in the ranking; retrain with --rank-by cosine to rank "
            "by the trained similarity"
        )
    return None


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seen_matrix(data: Any) -> sp.csr_matrix:
    """Each user's seen items: the union of what evaluation on the test split excludes."""
    from ssmrec.experiment import exclusions

    total = None
    for matrix in exclusions(data, "test"):
        total = matrix if total is None else total + matrix
    seen = sp.csr_matrix(total, dtype=np.float32)
    seen.data[:] = 1.0
    seen.sum_duplicates()
    seen.sort_indices()
    return seen


def from_run(path: str | Path, data: Any = None) -> Export:
    """The :class:`Export` of the finished run directory ``path`` (its dataset is loaded and checked)."""
    from ssmrec.experiment import load_run
    from ssmrec.rundir import CONFIG, DATA, FINAL, ID_MAPS, WEIGHTS, read_json

    run = Path(path)
    if not run.is_dir():
        raise SsmrecError(f"{run}: no such run directory")
    if (run / CONFIG).is_file() and not (run / ID_MAPS).is_file():
        raise SsmrecError(f"{run} {ID_MAPS_HELP}")
    config, data, model = load_run(run, data)
    maps = read_json(run / ID_MAPS)
    if len(maps.get("users", [])) != data.train.shape[0] or len(maps.get("items", [])) != data.train.shape[1]:
        raise SsmrecError(f"{run / ID_MAPS}: its id counts do not match the run's data")
    users, items = model.representations()
    rule = _run.ranking_rule(config)
    trained = _run.trained_similarity(config)
    warnings = [w for w in [cosine_dot_warning(trained, rule)] if w]
    model_kind = _run.model_name(config)
    kind = "lightgcn" if model_kind in ("lightgcn", "history") else model_kind
    foldin = foldin_from_model(model, data.train)
    reason = (
        None
        if foldin is not None
        else foldin_unsupported(kind, getattr(model, "side", None), getattr(model, "n_layers", None))
    )
    seen = seen_matrix(data)
    metadata: dict[str, Any] = {
        "ranking_rule": rule,
        "trained_similarity": trained,
        "similarity": trained or rule,
        "warnings": warnings,
        "model": {"name": model_kind, "loss": _run.loss_name(config), "config": read_json(run / CONFIG)},
        "fingerprint": {
            "run_dir": str(run.resolve()),
            "data": read_json(run / DATA),
            "config_sha256": _sha256(run / CONFIG),
            "weights_sha256": _sha256(run / WEIGHTS),
        },
        "metrics": read_json(run / FINAL) if (run / FINAL).is_file() else None,
        "ks": _run.cutoffs(config),
        "foldin": None if foldin is None else foldin.settings(),
        "foldin_unsupported": reason,
    }
    return make_export(users.numpy(), items.numpy(), maps["users"], maps["items"], seen, metadata, foldin)


def make_export(
    users: np.ndarray,
    items: np.ndarray,
    user_ids: Sequence[Any] | np.ndarray,
    item_ids: Sequence[Any] | np.ndarray,
    seen: sp.csr_matrix,
    metadata: dict[str, Any],
    foldin: FoldIn | None = None,
) -> Export:
    """An :class:`Export` from arrays (checked), with the format fields filled into ``metadata``."""
    users = np.ascontiguousarray(users, dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
        raise SsmrecError(f"representations must be (n, d) with one d: {users.shape}, {items.shape}")
    seen = sp.csr_matrix(seen)
    if seen.shape != (len(users), len(items)):
        raise SsmrecError(f"seen items have shape {seen.shape}, expected {(len(users), len(items))}")
    seen.sort_indices()
    user_map, item_map = IdMap(user_ids, "user"), IdMap(item_ids, "item")
    if len(user_map) != len(users) or len(item_map) != len(items):
        raise SsmrecError("the id maps do not match the number of representations")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ssmrec_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **metadata,
        "counts": {
            "users": len(users),
            "items": len(items),
            "dim": int(users.shape[1]),
            "seen": int(seen.nnz),
        },
        "ids": {"users": "int" if user_map.integer else "str", "items": "int" if item_map.integer else "str"},
    }
    meta.setdefault("similarity", meta.get("trained_similarity") or meta.get("ranking_rule"))
    meta.setdefault("warnings", [])
    if meta.get("ranking_rule") not in ("dot", "cosine"):
        raise SsmrecError(f"ranking rule must be dot or cosine, got {meta.get('ranking_rule')!r}")
    return Export(users, items, user_map, item_map, seen, meta, foldin)


# ------------------------------------------------------------------------------------------ arrays


def _id_arrays(name: str, ids: IdMap) -> dict[str, np.ndarray]:
    if ids.integer:
        return {name: np.asarray(ids.values, dtype=np.int64)}
    encoded = [v.encode() for v in ids.values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return {
        f"{name}_utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
        f"{name}_offsets": offsets,
    }


def _ids_from(arrays: dict[str, np.ndarray], name: str) -> list[Any]:
    if name in arrays:
        return arrays[name].astype(np.int64).tolist()
    blob, offsets = arrays[f"{name}_utf8"].tobytes(), arrays[f"{name}_offsets"]
    return [blob[offsets[i] : offsets[i + 1]].decode() for i in range(len(offsets) - 1)]


def to_arrays(export: Export) -> dict[str, np.ndarray]:
    """Every array of the layout (README, "Export file layout"), metadata excluded."""
    seen = export.seen
    arrays: dict[str, np.ndarray] = {
        "user_embeddings": export.users,
        "item_embeddings": export.items,
        **_id_arrays("user_ids", export.user_ids),
        **_id_arrays("item_ids", export.item_ids),
        "seen_indptr": seen.indptr.astype(np.int64),
        "seen_indices": seen.indices.astype(np.int32),
    }
    if export.foldin is not None:
        arrays["item_ego"] = export.foldin.item_ego
        if export.foldin.user_ego is not None:
            arrays["user_ego"] = export.foldin.user_ego
        graph = sp.csr_matrix(export.foldin.graph)
        graph.sort_indices()
        same = (
            graph.shape == seen.shape
            and np.array_equal(graph.indptr, seen.indptr)
            and np.array_equal(graph.indices, seen.indices)
        )
        if not same:  # the paper protocol trains on every seen pair: then the graph is not stored twice
            arrays["graph_indptr"] = graph.indptr.astype(np.int64)
            arrays["graph_indices"] = graph.indices.astype(np.int32)
    return arrays


def from_arrays(arrays: dict[str, np.ndarray], metadata: dict[str, Any], where: str) -> Export:
    """Inverse of :func:`to_arrays`, checking what it reads."""
    if metadata.get("format") != FORMAT:
        raise SsmrecError(f"{where}: not an ssmrec export (no {FORMAT!r} metadata)")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise SsmrecError(
            f"{where}: export format version {metadata.get('format_version')} is newer than this ssmrec "
            f"reads ({FORMAT_VERSION}); upgrade ssmrec"
        )
    try:
        users, items = arrays["user_embeddings"], arrays["item_embeddings"]
        shape = (len(users), len(items))
        seen = sp.csr_matrix(
            (np.ones(len(arrays["seen_indices"]), np.float32), arrays["seen_indices"], arrays["seen_indptr"]),
            shape=shape,
        )
        foldin = None
        settings = metadata.get("foldin")
        if settings:
            graph = seen
            if "graph_indptr" in arrays:
                graph = sp.csr_matrix(
                    (
                        np.ones(len(arrays["graph_indices"]), np.float32),
                        arrays["graph_indices"],
                        arrays["graph_indptr"],
                    ),
                    shape=shape,
                )
            foldin = FoldIn(
                graph,
                np.ascontiguousarray(arrays["item_ego"], dtype=np.float32),
                None
                if "user_ego" not in arrays
                else np.ascontiguousarray(arrays["user_ego"], dtype=np.float32),
                str(settings["side"]),
                (float(settings["alpha"][0]), float(settings["alpha"][1])),
                int(settings["layers"]),
            )
        user_ids, item_ids = _ids_from(arrays, "user_ids"), _ids_from(arrays, "item_ids")
    except (KeyError, ValueError, IndexError, TypeError) as error:
        raise SsmrecError(f"{where}: malformed export ({type(error).__name__}: {error})") from error
    keep = {k: v for k, v in metadata.items() if k not in ("counts", "ids")}
    export = make_export(users, items, user_ids, item_ids, seen, keep, foldin)
    export.metadata.update({k: metadata[k] for k in ("created", "ssmrec_version") if k in metadata})
    return export


# ------------------------------------------------------------------------------------------ writing


@contextlib.contextmanager
def _replacing(path: Path, directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it once the block succeeds (removed if not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        temp = Path(name)
    try:
        yield temp
        if directory:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.{os.getpid()}.old")
                os.replace(path, old)
            os.replace(temp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, path)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise


def default_output(run_dir: str | Path, fmt: str) -> Path:
    return Path(run_dir) / f"export{SUFFIXES[fmt]}"


def write(export: Export, path: str | Path, fmt: str = "npz") -> Path:
    """Write ``export`` to ``path`` in format ``fmt`` (atomically); returns the path written."""
    if fmt not in FORMATS:
        raise SsmrecError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.exists() and path.is_dir() != (fmt == "parquet"):
        kind, wanted = ("folder", "file") if path.is_dir() else ("file", "folder")
        raise SsmrecError(f"output {path} is an existing {kind}; a {fmt} export is a {wanted}")
    arrays = to_arrays(export)
    meta_json = json.dumps(export.metadata)
    if fmt == "npz":
        with _replacing(path) as temp, temp.open("wb") as handle:
            np.savez(handle, metadata=np.frombuffer(meta_json.encode(), dtype=np.uint8), **arrays)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        with _replacing(path) as temp:
            save_file(
                {k: np.ascontiguousarray(v) for k, v in arrays.items()},
                str(temp),
                metadata={"ssmrec": meta_json},
            )
    else:
        pa, pq = _pyarrow()
        with _replacing(path, directory=True) as temp:
            _write_parquet(pa, pq, export, arrays, temp)
            (temp / "metadata.json").write_text(meta_json + "\n")
    return path


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise SsmrecError(
            "the parquet format needs pyarrow: pip install 'ssmrec[export]' (or pip install pyarrow), "
            "or export as npz or safetensors"
        ) from error
    return pa, pq


def _list_column(pa: Any, indptr: np.ndarray, indices: np.ndarray) -> Any:
    return pa.ListArray.from_arrays(pa.array(indptr.astype(np.int32)), pa.array(indices.astype(np.int32)))


def _embedding_column(pa: Any, matrix: np.ndarray) -> Any:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def _write_parquet(pa: Any, pq: Any, export: Export, arrays: dict[str, np.ndarray], folder: Path) -> None:
    meta = {b"ssmrec": json.dumps(export.metadata).encode()}
    users: dict[str, Any] = {
        "index": pa.array(np.arange(len(export.users), dtype=np.int64)),
        "id": pa.array(export.user_ids.values),
        "embedding": _embedding_column(pa, export.users),
        "seen": _list_column(pa, arrays["seen_indptr"], arrays["seen_indices"]),
    }
    if "user_ego" in arrays:
        users["ego"] = _embedding_column(pa, arrays["user_ego"])
    if "graph_indptr" in arrays:
        users["graph"] = _list_column(pa, arrays["graph_indptr"], arrays["graph_indices"])
    items: dict[str, Any] = {
        "index": pa.array(np.arange(len(export.items), dtype=np.int64)),
        "id": pa.array(export.item_ids.values),
        "embedding": _embedding_column(pa, export.items),
    }
    if "item_ego" in arrays:
        items["ego"] = _embedding_column(pa, arrays["item_ego"])
    for name, columns in (("users", users), ("items", items)):
        table = pa.table(columns).replace_schema_metadata(meta)
        pq.write_table(table, folder / f"{name}.parquet")


# ------------------------------------------------------------------------------------------ reading


def load(path: str | Path) -> Export:
    """Read an export written by ``ssmrec export`` (npz, safetensors or a parquet folder).

    Returns an :class:`Export`: ``users`` / ``items`` (float32 representations, row = index),
    ``user_ids`` / ``item_ids`` (:class:`IdMap`: ``.values[index]`` is the original id, ``.index(id)``
    the index), ``seen`` (users x items CSR), ``metadata`` (ranking rule, similarity, warnings,
    fingerprint, metrics) and ``foldin`` (new-user encoder, or ``None``). Never unpickles anything.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "users.parquet").is_file():
            raise SsmrecError(f"{path}: a folder, but not a parquet export (no users.parquet)")
        return _load_parquet(path)
    if not path.is_file():
        raise SsmrecError(f"{path}: no such export file")
    with path.open("rb") as handle:
        head = handle.read(4)
    try:
        if head.startswith(b"PK"):
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            metadata = json.loads(arrays.pop("metadata").tobytes().decode())
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                header = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            metadata = json.loads(header.get("ssmrec", "{}"))
    except SsmrecError:
        raise
    except Exception as error:  # a corrupt or foreign file: one message, not a traceback
        raise SsmrecError(
            f"{path}: not a readable ssmrec export ({type(error).__name__}: {error})"
        ) from error
    export = from_arrays(arrays, metadata, str(path))
    export.metadata["source_path"] = str(path)  # where a saved faiss index is looked for
    return export


def _load_parquet(folder: Path) -> Export:
    pa, pq = _pyarrow()
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
        users = pq.read_table(folder / "users.parquet")
        items = pq.read_table(folder / "items.parquet")
        dim = int(metadata["counts"]["dim"])
        arrays: dict[str, np.ndarray] = {}

        def matrix(table: Any, column: str) -> np.ndarray:
            flat = table.column(column).combine_chunks().flatten().to_numpy()
            return np.ascontiguousarray(flat, dtype=np.float32).reshape(-1, dim)

        def csr(column: str) -> tuple[np.ndarray, np.ndarray]:
            values = users.column(column).combine_chunks()
            return values.offsets.to_numpy().astype(np.int64), values.flatten().to_numpy().astype(np.int32)

        arrays["user_embeddings"], arrays["item_embeddings"] = (
            matrix(users, "embedding"),
            matrix(items, "embedding"),
        )
        arrays["seen_indptr"], arrays["seen_indices"] = csr("seen")
        if "graph" in users.column_names:
            arrays["graph_indptr"], arrays["graph_indices"] = csr("graph")
        if "ego" in users.column_names:
            arrays["user_ego"] = matrix(users, "ego")
        if "ego" in items.column_names:
            arrays["item_ego"] = matrix(items, "ego")
        for name, table in (("user_ids", users), ("item_ids", items)):
            ids = table.column("id").to_pylist()
            if metadata["ids"][name.split("_")[0] + "s"] == "int":
                arrays[name] = np.asarray(ids, dtype=np.int64)
            else:
                arrays.update(_id_arrays(name, IdMap(ids, name)))
    except (OSError, KeyError, ValueError, pa.ArrowException) as error:
        raise SsmrecError(
            f"{folder}: not a readable ssmrec parquet export ({type(error).__name__}: {error})"
        ) from error
    return from_arrays(arrays, metadata, str(folder))


def open_model(target: str | Path) -> Export:
    """A run directory (exported in memory) or an export file / folder, whichever ``target`` is."""
    from ssmrec.rundir import CONFIG

    path = Path(target)
    if path.is_dir() and (path / CONFIG).is_file():
        return from_run(path)
    if not path.exists():
        raise SsmrecError(f"{path}: no such run directory or export")
    return load(path)
