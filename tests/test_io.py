import json

import numpy as np
import pyarrow as pa
import pytest

from reid import io


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_json_and_parquet_metadata(tmp_path):
    io.write_json_atomic(tmp_path / "m.json", {"b": 1, "a": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2, "b": 1}
    table = pa.table({"x": [1, 2]})
    io.write_parquet_atomic(tmp_path / "t.parquet", table, {"size": 32, "policy": "mean"})
    assert io.parquet_metadata(tmp_path / "t.parquet") == {"size": "32", "policy": "mean"}


def test_png_round_trips_are_lossless():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    assert np.array_equal(io.decode_png(io.encode_png(rgb)), rgb)
    assert np.array_equal(io.decode_raw(io.encode_raw(rgb)), rgb)


def test_read_image_errors_name_the_path(tmp_path):
    with pytest.raises(io.ImageReadError, match="not found.*missing.jpg"):
        io.read_image(tmp_path / "missing.jpg")
    img = np.full((16, 8, 3), 120, np.uint8)
    io.write_image(tmp_path / "ok.jpg", img)
    assert io.read_image(tmp_path / "ok.jpg").shape == (16, 8, 3)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.ImageReadError, match="cut.jpg"):
        io.read_image(tmp_path / "cut.jpg")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(io.ImageReadError, match="junk.png"):
        io.read_image(tmp_path / "junk.png")
