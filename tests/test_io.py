import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from reid import io

ROOT = Path(__file__).resolve().parents[1]


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


def _jpeg(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_jpeg_with_padding_after_its_end_marker_is_read(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    io.write_image(tmp_path / "ok.jpg", img)
    data = (tmp_path / "ok.jpg").read_bytes()
    assert io.jpeg_end(data) == len(data)
    for padding in (b"\0" * 32, b"\0" * 8192, b"\xff" * 32, b"\xff\xd9" + b"\0" * 30):
        padded = _jpeg(tmp_path, "padded.jpg", data + padding)
        assert io.jpeg_end(padded.read_bytes()) == len(data)
        assert np.array_equal(io.read_image(padded), io.read_image(tmp_path / "ok.jpg"))


def test_truncated_jpeg_is_caught_even_with_padding_or_an_embedded_thumbnail(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    io.write_image(tmp_path / "ok.jpg", img)
    data = (tmp_path / "ok.jpg").read_bytes()
    # An APP1 (EXIF-like) segment holding a thumbnail with its own SOI..EOI, right after SOI.
    thumbnail = b"Exif\0\0\xff\xd8" + b"\x11" * 40 + b"\xff\xd9"
    with_thumb = data[:2] + b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail + data[2:]
    assert io.jpeg_end(with_thumb) == len(with_thumb)
    for name, cut in {"half": data[: len(data) // 2], "no_eoi": data[:-2],
                      "half_padded": data[: len(data) // 2] + b"\0" * 32,
                      "thumb_half": with_thumb[: len(with_thumb) * 2 // 3]}.items():
        assert io.jpeg_end(cut) is None, name
        with pytest.raises(io.ImageReadError, match=f"truncated image: .*{name}.jpg"):
            io.read_image(_jpeg(tmp_path, f"{name}.jpg", cut))


@pytest.mark.parametrize("flags", [[cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]],
                         ids=["progressive", "restart_markers"])
def test_jpeg_structure_walk_handles_multi_scan_and_restart_markers(flags):
    img = np.random.default_rng(2).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, flags)
    data = buf.tobytes()
    assert ok and io.jpeg_end(data) == len(data)
    assert io.jpeg_end(data[: len(data) * 3 // 4]) is None


def _killed_atomic_write(target, data: bytes) -> None:
    """Start an atomic write of `target` in a subprocess and SIGKILL it mid-write (no cleanup runs)."""
    code = ("import os, signal, sys\nfrom reid.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(bytes.fromhex(sys.argv[2]))\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, str(target), data.hex()], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_remove_stale_temps_clears_what_a_killed_write_left(tmp_path):
    io.write_bytes_atomic(tmp_path / "last.pt", b"epoch 1")
    _killed_atomic_write(tmp_path / "last.pt", b"half of epoch 2")
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.")]
    assert len(stale) == 1 and io.is_temp_name(stale[0].name) and stale[0].read_bytes() == b"half of epoch 2"
    for keep in ("notes.tmp", ".hidden", "last.pt.tmp"):  # not atomic_path names
        (tmp_path / keep).write_text("keep")

    assert io.remove_stale_temps(tmp_path) == stale
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "last.pt", "last.pt.tmp", "notes.tmp"]
    assert (tmp_path / "last.pt").read_bytes() == b"epoch 1"  # the last complete write is untouched
    assert io.remove_stale_temps(tmp_path / "missing") == []


def test_torch_files_do_not_depend_on_the_file_name(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": torch.tensor(3)}
    io.write_torch_atomic(tmp_path / "a.pt", state)
    io.write_torch_atomic(tmp_path / "model.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()
    # what it guards against: torch.save straight to a file names the zip's records after it
    torch.save(state, tmp_path / "b.pt")
    torch.save(state, tmp_path / "c.pt")
    assert (tmp_path / "b.pt").read_bytes() != (tmp_path / "c.pt").read_bytes()
    # the serialization id is a hash of record names and contents, not random: same bytes in another process
    code = ("import sys, torch\nfrom reid.io import write_torch_atomic\n"
            "write_torch_atomic(sys.argv[1], {'w': torch.arange(6.0).reshape(2, 3), 'step': torch.tensor(3)})\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "other.pt")], check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert (tmp_path / "other.pt").read_bytes() == (tmp_path / "a.pt").read_bytes()
    names = zipfile.ZipFile(tmp_path / "a.pt").namelist()
    assert "archive/.data/serialization_id" in names
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], state["w"])


def test_a_write_killed_midway_leaves_a_temp_that_the_next_write_of_that_file_removes(tmp_path):
    code = ("import os, signal, sys\nfrom reid.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half a parquet file')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "iuv.parquet")],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and io.is_temp_name(left[0], "iuv.parquet")  # the kill's leftover
    other = tmp_path / ".dsap.parquet.k1ll3dxx.tmp"  # another file's: its own writer's to clean
    other.write_bytes(b"")
    io.write_bytes_atomic(tmp_path / "iuv.parquet", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "iuv.parquet"]
    assert (tmp_path / "iuv.parquet").read_bytes() == b"whole"
