"""ReidDataset: manifest paths (relative and absolute), labels, DSAP cache alignment and errors;
the caches' S and T (cache_shapes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from reid.data.torch_dataset import ReidDataset, cache_shapes, manifest_split
from reid.data.transforms import eval_transform
from reid.io import write_image, write_parquet_atomic


def write_data(tmp_path, s: int = 4):
    rows = []
    for i, split in enumerate(["train", "train", "query"]):
        path = tmp_path / "ds" / f"{i}.png"
        write_image(path, np.full((16, 8, 3), 40 * i, np.uint8))
        rows.append({"image_id": f"img{i}", "split": split, "pid": i, "camid": 0,
                     "path": str(path) if i == 1 else f"{i}.png",  # one absolute path
                     "height": 16, "width": 8, "label": i if split == "train" else None})
    write_parquet_atomic(tmp_path / "manifest.parquet", pa.Table.from_pylist(rows), {"root": str(tmp_path / "ds")})
    # DSAP and texture caches in another order than the manifest, plus a row of an image it lacks;
    # entry k filled with value k (texture: 100 + k)
    ids = ["img2", "img0", "extra", "img1"]
    blobs = [bytes([int(i[-1]) if i != "extra" else 9]) * (24 * s * s * 3) for i in ids]
    dsap = pa.table({"image_id": ids, "dsap": pa.array(blobs, pa.binary(24 * s * s * 3)),
                     "coverage": [0.5] * 4})
    write_parquet_atomic(tmp_path / "dsap.parquet", dsap, {"size": s})
    width = 6 * TILE * 4 * TILE * 3
    atlases = [bytes([100 + (int(i[-1]) if i != "extra" else 9)]) * width for i in ids]
    write_parquet_atomic(tmp_path / "texture.parquet",
                         pa.table({"image_id": ids, "texture": pa.array(atlases, pa.binary(width))}), {"tile": TILE})
    return tmp_path / "manifest.parquet", tmp_path / "dsap.parquet"


TILE = 2


@pytest.mark.parametrize("batch_rows", [1, 1024])  # the caches read row by row, or in one batch
def test_samples_paths_labels_dsap_and_texture(tmp_path, monkeypatch, batch_rows) -> None:
    import reid.data.torch_dataset as module
    monkeypatch.setattr(module.cache_column, "__kwdefaults__", {"batch_rows": batch_rows})
    manifest_path, dsap_path = write_data(tmp_path)
    table = manifest_split(manifest_path)
    ds = ReidDataset(table, eval_transform((16, 8)), dsap_path=dsap_path, texture_path=tmp_path / "texture.parquet")
    assert ds.labels.tolist() == [0, 1, -1]  # query rows carry no train label
    assert ds.dsap.shape == (3, 24, 4, 4, 3) and ds.texture.shape == (3, 12, 8, 3)  # the cache's extra row left out
    for i in range(3):
        sample = ds[i]
        assert sample["image"].shape == (16, 8, 3) and sample["image"].dtype == torch.uint8 and int(sample["index"]) == i
        assert sample["dsap"].shape == (24, 4, 4, 3) and sample["dsap"].dtype == torch.uint8
        assert sample["texture"].shape == (12, 8, 3) and sample["texture"].dtype == torch.uint8
        # aligned to the manifest row, not cache order
        assert sample["dsap"].unique().tolist() == [i] and sample["texture"].unique().tolist() == [100 + i]
        sample["dsap"] += 1  # a writable copy: the cache stays as read
    assert ds[0]["dsap"].unique().tolist() == [0]
    assert len(ReidDataset(manifest_split(manifest_path, ["train"]), eval_transform((16, 8)))) == 2
    assert isinstance(ds[0]["label"], torch.Tensor)


def test_missing_dsap_entry_names_the_image(tmp_path) -> None:
    manifest_path, _ = write_data(tmp_path)
    partial = pa.table({"image_id": ["img0"], "dsap": pa.array([b"\0" * 24 * 48], pa.binary(24 * 48))})
    write_parquet_atomic(tmp_path / "partial.parquet", partial, {"size": 4})
    with pytest.raises(ValueError, match="partial.parquet: no dsap for 2 image.*img1"):
        ReidDataset(manifest_split(manifest_path), eval_transform((16, 8)), dsap_path=tmp_path / "partial.parquet")


def test_cache_shapes_reads_s_and_t_from_the_caches_a_model_reads(tmp_path) -> None:
    _, dsap_path = write_data(tmp_path, s=6)
    texture = tmp_path / "texture.parquet"
    write_parquet_atomic(texture, pa.table({"image_id": ["img0"], "texture": [b"png"]}), {"tile": 16})
    with pytest.raises(ValueError, match=r"texture.parquet: texture entries are binary, expected fixed_size_binary\[18432\]"):
        ReidDataset(manifest_split(tmp_path / "manifest.parquet", ["train"])[:1], eval_transform((16, 8)),
                    texture_path=texture)  # a PNG cache of before: re-run the stage
    missing = tmp_path / "none.parquet"
    assert cache_shapes((), missing, missing) == {}  # baseline: no cache is opened
    assert cache_shapes(("dsap",), dsap_path, missing) == {"dsap_size": 6}
    assert cache_shapes(("dsap", "texture"), dsap_path, texture) == {"dsap_size": 6, "texture_tile": 16}
    with pytest.raises(FileNotFoundError, match="none.parquet"):
        cache_shapes(("texture",), dsap_path, missing)
    with pytest.raises(ValueError, match="dsap.parquet: schema metadata lacks 'tile'"):
        cache_shapes(("texture",), dsap_path, dsap_path)
