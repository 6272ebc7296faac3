"""Feature files (reid.features): one schema, metadata keys, atomic write, checked read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from reid.features import feature_metadata, feature_table, read_features, write_feature_table, write_features
from reid.io import file_sha256, write_parquet_atomic


def test_the_file_is_byte_identical_to_the_hand_written_format(tmp_path) -> None:
    """Same columns, types and metadata (keys, order, values) as the files written before this module."""
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    feats = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    ids = ["q/1", "g/2", "g/3"]
    meta = feature_metadata(model="pretrained", network="baseline", weights=weights, flip=True, size=(64, 32))
    assert meta == {"model": "pretrained", "network": "baseline", "weights": weights.as_posix(),
                    "model_sha256": file_sha256(weights), "flip": "True", "size": "64x32"}
    assert list(meta) == ["model", "network", "weights", "model_sha256", "flip", "size"]
    write_features(tmp_path / "new.parquet", ids, feats, meta)
    old = pa.table({"image_id": pa.array(ids, pa.string()),
                    "feature": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), 4)})
    write_parquet_atomic(tmp_path / "old.parquet", old, {"model": "pretrained", "network": "baseline",
                                                         "weights": weights.as_posix(),
                                                         "model_sha256": file_sha256(weights), "flip": True,
                                                         "size": "64x32"})
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()


def test_round_trip_with_paths_and_metadata(tmp_path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"w")
    meta = feature_metadata(model="dsa", weights=weights, flip=False, size=(8, 4), metric="l2")
    write_features(tmp_path / "f.parquet", ["a", "b"], np.eye(2, 3), meta, paths=["/x/a.png", "/x/b.png"])
    file = read_features(tmp_path / "f.parquet")
    assert file.image_ids == ["a", "b"] and file.paths == ["/x/a.png", "/x/b.png"]
    assert file.features.dtype == np.float32 and file.features.shape == (2, 3)
    assert (file.flip, file.network, file.metadata["metric"]) == (False, "dsa", "l2")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_bad_files_are_refused_naming_the_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="one \\[D\\] feature per image id"):
        feature_table(["a"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x.parquet: not a feature file: no column"):
        write_feature_table(tmp_path / "x.parquet", pa.table({"image_id": ["a"]}))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="junk.parquet: not a readable Parquet feature file"):
        read_features(tmp_path / "junk.parquet")
    dup = feature_table(["a", "a"], np.zeros((2, 3)))
    write_parquet_atomic(tmp_path / "dup.parquet", dup)
    with pytest.raises(ValueError, match="dup.parquet: duplicate image_id"):
        read_features(tmp_path / "dup.parquet")
    with pytest.raises(FileNotFoundError, match="feature file not found: .*none.parquet"):
        read_features(tmp_path / "none.parquet")
