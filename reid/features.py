"""Feature files: the one Parquet format of every set of embeddings, written and read here alone.

Written by the features stage (``data/features/<set>.parquet``) and ``reid embed``; read by the
evaluate stage (reid.evaluation) and ``reid search``.

Columns:

* ``image_id`` — string, unique (the manifest's image_id; for ``reid embed`` the path below its folder);
* ``path`` — string, optional (``reid embed``: the image file, which ``reid search --draw`` shows);
* ``feature`` — fixed_size_list<float32>[D], no nulls.

Schema metadata (strings):

* ``model`` — the feature set (features stage: a model name or ``pretrained``) or the model (``reid embed``);
* ``network`` — features stage only: the model name of the network that embedded it;
* ``weights``, ``model_sha256`` — path and sha256 of the model.pt that embedded it (``reid search``
  refuses a query model with other weights);
* ``flip`` — ``True`` / ``False``: each embedding is the mean over the image and its mirror;
* ``size`` — ``HxW``, the network's input size;
* ``metric`` — ``reid embed`` only: ``cosine`` (stored L2-normalised) or ``l2`` (raw); absent: raw.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reid.io import file_sha256, parquet_metadata, write_parquet_atomic

IMAGE_ID, PATH, FEATURE = "image_id", "path", "feature"
WEIGHTS_PATH, WEIGHTS_SHA256 = "weights", "model_sha256"  # metadata keys naming the embedding weights


def feature_table(image_ids: Sequence[str], features: np.ndarray, paths: Sequence[str] | None = None) -> pa.Table:
    """The feature file's table: image_id[, path], feature (float32 [N, D] -> fixed_size_list<float32>[D])."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or len(image_ids) != len(features):
        raise ValueError(f"need one [D] feature per image id, got {len(image_ids)} ids and features "
                         f"of shape {features.shape}")
    columns = {IMAGE_ID: pa.array(list(image_ids), pa.string())}
    if paths is not None:
        if len(paths) != len(image_ids):
            raise ValueError(f"need one path per image id, got {len(paths)} paths for {len(image_ids)} ids")
        columns[PATH] = pa.array(list(paths), pa.string())
    columns[FEATURE] = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1), pa.float32()),
                                                         features.shape[1])
    return pa.table(columns)


def feature_metadata(*, model: str, weights: str | os.PathLike, flip: bool, size: tuple[int, int],
                     network: str | None = None, metric: str | None = None) -> dict[str, str]:
    """The metadata of a feature file (keys in the module notes), the weights' sha256 computed here."""
    meta = {"model": model}
    if network is not None:
        meta["network"] = network
    meta |= {WEIGHTS_PATH: Path(weights).as_posix(), WEIGHTS_SHA256: file_sha256(weights), "flip": str(flip),
             "size": f"{size[0]}x{size[1]}"}
    if metric is not None:
        meta["metric"] = metric
    return meta


def write_feature_table(path: str | os.PathLike, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a feature_table (checked against the format) with its metadata."""
    _check_schema(path, table.schema)
    write_parquet_atomic(path, table, metadata)


def write_features(path: str | os.PathLike, image_ids: Sequence[str], features: np.ndarray,
                   metadata: dict[str, str] | None = None, *, paths: Sequence[str] | None = None) -> None:
    """Atomically write `features` (float32 [N, D]) of `image_ids` as a feature file."""
    write_feature_table(path, feature_table(image_ids, features, paths), metadata)


@dataclass
class FeatureFile:
    """A feature file read back: rows in file order, and its metadata."""

    path: Path
    image_ids: list[str]
    features: np.ndarray  # float32 [N, D]
    paths: list[str] | None  # the `path` column, when there is one
    metadata: dict[str, str]

    @property
    def flip(self) -> bool | None:
        return None if "flip" not in self.metadata else self.metadata["flip"].lower() == "true"

    @property
    def network(self) -> str | None:
        """The model name of the embedding network (features stage: ``network``; ``reid embed``: ``model``)."""
        return self.metadata.get("network", self.metadata.get("model"))


def read_features(path: str | os.PathLike) -> FeatureFile:
    """A feature file, checked against the format; every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        table = pq.read_table(path)
        metadata = parquet_metadata(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable Parquet feature file ({str(err).splitlines()[0]})") from None
    _check_schema(path, table.schema)
    ids = table.column(IMAGE_ID).to_pylist()
    column = table.column(FEATURE).combine_chunks()
    if column.null_count:
        raise ValueError(f"{path}: {column.null_count} null feature(s)")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate image_id values")
    features = column.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), column.type.list_size)
    paths = table.column(PATH).to_pylist() if PATH in table.column_names else None
    return FeatureFile(path, ids, features, paths, metadata)


def _check_schema(path: str | os.PathLike, schema: pa.Schema) -> None:
    missing = [c for c in (IMAGE_ID, FEATURE) if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: not a feature file: no column(s) {', '.join(missing)} (columns: "
                         f"{', '.join(schema.names) or 'none'})")
    ftype = schema.field(FEATURE).type
    if not (pa.types.is_fixed_size_list(ftype) and pa.types.is_float32(ftype.value_type)):
        raise ValueError(f"{path}: column 'feature' must be fixed_size_list<float32>, got {ftype}")
