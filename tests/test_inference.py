"""Feature extraction: table schema, dataset order, flip averaging, manifest splits, dsa streams."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_trainer import TinyModel, make_manifest

from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import eval_transform, model_inputs, normalised_images
from reid.engine.inference import (
    DSA_STREAMS,
    dsa_stream_features,
    embed,
    embed_batch,
    extract_features,
    extract_named_features,
    manifest_dsa_stream_features,
    manifest_features,
    mirrored,
)
from reid.io import write_parquet_atomic
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig
from reid.parts import N_PARTS

S = 8  # tiny DSAP side
DSA_CFG = ModelConfig(backbone="resnet18", pretrained=None, width_mult=0.125, id_head_hidden=16)
SIZE = (32, 16)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_features_table_in_dataset_order_with_flip_average(tmp_path) -> None:
    manifest = make_manifest(tmp_path, n_ids=3, per_id=2)
    torch.manual_seed(0)
    model = TinyModel(num_classes=3).eval()
    dataset = ReidDataset(manifest, eval_transform((16, 8)))
    ids = dataset.image_ids
    plain = extract_features(model, dataset, ids, device=torch.device("cpu"), batch_size=4)
    assert plain.schema.field("feature").type == pa.list_(pa.float32(), TinyModel.feature_dim)
    assert plain["image_id"].to_pylist() == ids
    images = torch.stack([dataset[i]["image"] for i in range(len(ids))])  # uint8, as the loader yields them
    floats = normalised_images(images)
    expected = torch.stack([model.forward_features(floats[i][None])[0] for i in range(len(ids))])
    assert np.allclose(np.array(plain["feature"].to_pylist()), expected.detach().numpy(), atol=1e-5)

    flipped = extract_features(model, dataset, ids, device=torch.device("cpu"), batch_size=4, flip=True)
    mean = (model.forward_features(floats) + model.forward_features(floats.flip(-1))) / 2
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


def write_dsap(path, image_ids: list[str], s: int = S) -> None:
    """A DSAP cache as the dsap stage writes it: random 24 x S x S x 3 bytes per image, metadata size."""
    rng = np.random.default_rng(1)
    blobs = [rng.integers(0, 256, N_PARTS * s * s * 3, dtype=np.uint8).tobytes() for _ in image_ids]
    table = pa.table({"image_id": image_ids, "dsap": pa.array(blobs, pa.binary(N_PARTS * s * s * 3)),
                      "coverage": pa.array([[0.5] * N_PARTS] * len(image_ids), pa.list_(pa.float32(), N_PARTS))})
    write_parquet_atomic(path, table, {"size": s})


@pytest.fixture(scope="module")
def dsa_model():
    torch.manual_seed(0)
    return build_model("dsa", 3, DSA_CFG, dsap_size=S).eval()


def feature_array(table: pa.Table) -> np.ndarray:
    return np.array(table["feature"].to_pylist(), np.float32)


def test_dsa_streams_have_the_model_dim_and_fused_is_mf_plus_guide(tmp_path, dsa_model) -> None:
    manifest = make_manifest(tmp_path, n_ids=3, per_id=2)
    write_dsap(tmp_path / "dsap.parquet", manifest["image_id"].to_pylist())
    dataset = ReidDataset(manifest, eval_transform(SIZE), dsap_path=tmp_path / "dsap.parquet")
    ids = dataset.image_ids
    dims = dict.fromkeys(DSA_STREAMS, dsa_model.feature_dim)
    tables = extract_named_features(dsa_model, dataset, ids, features=dsa_stream_features, dims=dims,
                                    device=torch.device("cpu"), batch_size=4)
    assert set(tables) == {"mf", "fused", "guide"}
    for table in tables.values():
        assert table.schema.field("feature").type == pa.list_(pa.float32(), dsa_model.feature_dim)
        assert table["image_id"].to_pylist() == ids
    mf, fused, guide = (feature_array(tables[k]) for k in ("mf", "fused", "guide"))
    np.testing.assert_allclose(fused, mf + guide, atol=1e-5)
    assert np.abs(guide).max() > 0
    # mf is the inference model's feature; guide the DSAG-Stream alone; fused the model's fused variant
    np.testing.assert_allclose(mf, feature_array(extract_features(dsa_model.inference_model(), dataset, ids,
                                                                  device=torch.device("cpu"))), atol=1e-5)
    batch = model_inputs({k: torch.stack([dataset[i][k] for i in range(len(ids))]) for k in ("image", "dsap")})
    images, dsap = batch["image"], batch["dsap"]
    with torch.no_grad():
        np.testing.assert_allclose(guide, torch.cat(dsa_model.dsag(dsap), 1).numpy(), atol=1e-5)
        np.testing.assert_allclose(fused, dsa_model.forward_fused_features(images, dsap).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        extract_named_features(dsa_model, dataset, ids, features=dsa_stream_features, dims={"mf": 1},
                               device=torch.device("cpu"))


def test_flip_mirrors_the_image_never_the_dsap(dsa_model) -> None:
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, *SIZE, generator=g), "dsap": torch.randn(2, N_PARTS, 3, S, S, generator=g)}
    mirror = mirrored(batch)
    assert torch.equal(mirror["image"], batch["image"].flip(-1)) and mirror["dsap"] is batch["dsap"]
    flipped = embed_batch(dsa_model, batch, dsa_stream_features, flip=True)
    plain = embed_batch(dsa_model, batch, dsa_stream_features)
    with torch.no_grad():
        mirror_fused = dsa_model.forward_fused_features(batch["image"].flip(-1), batch["dsap"])
        both_flipped = dsa_model.forward_fused_features(batch["image"].flip(-1), batch["dsap"].flip(-1))
    assert torch.allclose(flipped["fused"], (plain["fused"] + mirror_fused) / 2, atol=1e-5)
    assert not torch.allclose(flipped["fused"], (plain["fused"] + both_flipped) / 2, atol=1e-4)
    assert torch.allclose(flipped["guide"], plain["guide"], atol=1e-6)  # the guide sees only the DSAP
    assert not torch.allclose(flipped["mf"], plain["mf"], atol=1e-4)


def test_manifest_dsa_streams_take_query_and_gallery_rows(tmp_path, dsa_model) -> None:
    manifest = make_manifest(tmp_path, n_ids=2, per_id=2)
    splits = ["query", "gallery", "train", "gallery"]
    table = manifest.set_column(manifest.column_names.index("split"), "split", pa.array(splits))
    write_parquet_atomic(tmp_path / "m.parquet", table, {"root": "/"})  # paths are absolute already
    ids = table["image_id"].to_pylist()
    write_dsap(tmp_path / "dsap.parquet", ids[::-1])  # another order than the manifest
    cpu = torch.device("cpu")
    streams = manifest_dsa_stream_features(dsa_model, tmp_path / "m.parquet", tmp_path / "dsap.parquet", SIZE,
                                           device=cpu, flip=True)
    mf = manifest_features(dsa_model.inference_model(), tmp_path / "m.parquet", SIZE, device=cpu, flip=True)
    assert all(t["image_id"].to_pylist() == [ids[0], ids[1], ids[3]] for t in streams.values())
    np.testing.assert_allclose(feature_array(streams["mf"]), feature_array(mf), atol=1e-5)


def test_bf16_inference_on_the_cpu_stays_within_rounding_of_fp32(tmp_path) -> None:
    manifest = make_manifest(tmp_path, n_ids=3, per_id=2)
    torch.manual_seed(0)
    model = build_model("baseline", 3, DSA_CFG).eval().inference_model()
    dataset = ReidDataset(manifest, eval_transform(SIZE))
    cpu = torch.device("cpu")
    fp32 = feature_array(extract_features(model, dataset, dataset.image_ids, device=cpu, amp="off"))
    auto = feature_array(extract_features(model, dataset, dataset.image_ids, device=cpu))  # auto: fp32 on the CPU
    bf16 = feature_array(extract_features(model, dataset, dataset.image_ids, device=cpu, amp="bf16"))
    assert np.array_equal(auto, fp32)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # it did run in bf16
    cosine = (bf16 * fp32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.99
