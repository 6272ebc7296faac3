"""Fixed-feature retrieval on the regulators' inputs: identity-carrying caches score high, noise at chance."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from reid.consistency import contact_sheet, dsap_feature, regulator_consistency, texture_feature
from reid.io import encode_raw, write_image, write_parquet_atomic
from reid.parts import N_PARTS

S, T = 8, 4
N_IDS = 12


def identity_colours() -> np.ndarray:
    """12 colours at least 100 apart in RGB."""
    return np.array([(r, g, b) for r in (30, 130, 230) for g in (30, 230) for b in (30, 230)])


def write_world(root):
    """Per identity a query (camera 0) and two gallery crops (camera 1), coloured by identity, plus DSAP
    and texture caches that are identity-coloured ("faithful") or drawn at random ("noise")."""
    rng = np.random.default_rng(1)
    colours = identity_colours()
    rows, dsaps, noise, atlases = [], [], [], []
    for pid in range(N_IDS):
        for j, split in enumerate(("query", "gallery", "gallery")):
            image = np.clip(colours[pid] + rng.normal(0, 20, (32, 16, 3)), 0, 255).astype(np.uint8)
            name = f"{pid:04d}_{j}"
            write_image(root / "images" / f"{name}.png", image)
            rows.append({"image_id": name, "split": split, "pid": pid, "camid": int(j > 0),
                         "path": f"images/{name}.png", "height": 32, "width": 16, "label": -1})
            part = np.clip(colours[pid] + rng.normal(0, 20, (N_PARTS, S, S, 3)), 0, 255).astype(np.uint8)
            dsaps.append(part.tobytes())
            noise.append(rng.integers(0, 256, part.shape, dtype=np.uint8).tobytes())
            atlases.append(np.clip(colours[pid] + rng.normal(0, 20, (6 * T, 4 * T, 3)), 0, 255)
                           .astype(np.uint8).tobytes())
    write_parquet_atomic(root / "manifest.parquet", pa.Table.from_pylist(rows), {"root": str(root)})
    ids = [r["image_id"] for r in rows]
    width = N_PARTS * S * S * 3
    for name, blobs in (("dsap", dsaps), ("noise", noise)):
        write_parquet_atomic(root / f"{name}.parquet",
                             pa.table({"image_id": ids, "dsap": pa.array(blobs, pa.binary(width))}), {"size": S})
    write_parquet_atomic(root / "texture.parquet", pa.table({"image_id": ids, "texture": pa.array(atlases, pa.binary(6 * T * 4 * T * 3))}),
                         {"tile": T})
    iuv = np.zeros((32, 16, 3), np.uint8)
    iuv[8:24, 4:12] = (2, 128, 64)  # a torso front
    write_parquet_atomic(root / "iuv.parquet", pa.table({"image_id": ids, "iuv": [encode_raw(iuv)] * len(ids),
                                                         "found": [True] * len(ids)}))


def test_identity_carrying_inputs_retrieve_and_noise_does_not(tmp_path):
    write_world(tmp_path)
    faithful = regulator_consistency(tmp_path / "manifest.parquet", dsap=tmp_path / "dsap.parquet",
                                     texture=tmp_path / "texture.parquet")
    assert set(faithful) == {"crop", "dsap", "texture"}
    for name in ("crop", "dsap", "texture"):
        assert faithful[name]["rank1_pct"] == 100.0 and faithful[name]["n_query_valid"] == N_IDS, name
    noise = regulator_consistency(tmp_path / "manifest.parquet", dsap=tmp_path / "noise.parquet")
    assert noise["dsap"]["rank1_pct"] < 50.0  # chance is 1 / 12


def test_feature_sizes_do_not_depend_on_s_or_t():
    assert dsap_feature(np.zeros((N_PARTS, 12, 12, 3), np.uint8)).shape == dsap_feature(
        np.zeros((N_PARTS, 32, 32, 3), np.uint8)).shape
    assert texture_feature(np.zeros((6 * 8, 4 * 8, 3), np.uint8)).shape == texture_feature(
        np.zeros((6 * 32, 4 * 32, 3), np.uint8)).shape


def test_a_cache_missing_an_image_names_it(tmp_path):
    write_world(tmp_path)
    table = pa.table({"image_id": ["0000_0"], "dsap": pa.array([b"\0" * (N_PARTS * S * S * 3)],
                                                               pa.binary(N_PARTS * S * S * 3))})
    write_parquet_atomic(tmp_path / "short.parquet", table, {"size": S})
    with pytest.raises(ValueError, match="short.parquet: no dsap for"):
        regulator_consistency(tmp_path / "manifest.parquet", dsap=tmp_path / "short.parquet")


def test_contact_sheet_shows_crop_iuv_dsap_and_texture_per_query(tmp_path):
    write_world(tmp_path)
    sheet = contact_sheet(tmp_path / "manifest.parquet", tmp_path / "iuv.parquet", tmp_path / "dsap.parquet",
                          tmp_path / "texture.parquet", n=3)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[0] == 3 * (256 + 4)
    crop_panel = sheet[:256, :128]  # the first query's crop, scaled to 256 x 128
    assert np.abs(crop_panel.reshape(-1, 3).mean(0) - identity_colours()[0]).max() < 20
