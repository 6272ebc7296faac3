"""Feature extraction: table schema, dataset order, flip averaging, manifest splits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_trainer import TinyModel, make_manifest

from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import eval_transform
from reid.engine.inference import embed, extract_features, manifest_features
from reid.io import write_parquet_atomic


def test_features_table_in_dataset_order_with_flip_average(tmp_path) -> None:
    manifest = make_manifest(tmp_path, n_ids=3, per_id=2)
    torch.manual_seed(0)
    model = TinyModel(num_classes=3).eval()
    dataset = ReidDataset(manifest, eval_transform((16, 8)))
    ids = dataset.image_ids
    plain = extract_features(model, dataset, ids, device=torch.device("cpu"), batch_size=4)
    assert plain.schema.field("feature").type == pa.list_(pa.float32(), TinyModel.feature_dim)
    assert plain["image_id"].to_pylist() == ids
    expected = torch.stack([model.forward_features(dataset[i]["image"][None])[0] for i in range(len(ids))])
    assert np.allclose(np.array(plain["feature"].to_pylist()), expected.detach().numpy(), atol=1e-5)

    flipped = extract_features(model, dataset, ids, device=torch.device("cpu"), batch_size=4, flip=True)
    images = torch.stack([dataset[i]["image"] for i in range(len(ids))])
    mean = (model.forward_features(images) + model.forward_features(images.flip(-1))) / 2
    assert np.allclose(np.array(flipped["feature"].to_pylist()), mean.detach().numpy(), atol=1e-5)
    assert not np.allclose(np.array(flipped["feature"].to_pylist()), expected.detach().numpy(), atol=1e-5)
    assert torch.allclose(embed(model, images, flip=True), mean, atol=1e-6)

    with pytest.raises(ValueError, match="5 image ids for 6 dataset items"):
        extract_features(model, dataset, ids[:5], device=torch.device("cpu"))


def test_manifest_features_takes_query_and_gallery_rows(tmp_path) -> None:
    manifest = make_manifest(tmp_path, n_ids=2, per_id=2)
    splits = ["query", "gallery", "train", "gallery"]
    table = manifest.set_column(manifest.column_names.index("split"), "split", pa.array(splits))
    write_parquet_atomic(tmp_path / "m.parquet", table, {"root": "/"})  # paths are absolute already
    model = TinyModel(num_classes=2)
    out = manifest_features(model, tmp_path / "m.parquet", (16, 8), device=torch.device("cpu"))
    ids = table["image_id"].to_pylist()
    assert out["image_id"].to_pylist() == [ids[0], ids[1], ids[3]]
