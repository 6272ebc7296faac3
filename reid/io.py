"""File I/O shared by every stage: atomic writes, image decoding, Parquet helpers.

Outputs are always written to a temporary file in the destination folder and renamed
into place, so a killed stage never leaves a half-written file that DVC could cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class ImageReadError(ValueError):
    """An image file that is missing, unreadable or truncated."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the usual permissions (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_parquet_atomic(path: str | os.PathLike, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Write `table` (plus string key/value schema metadata) atomically."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def parquet_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string key/value schema metadata of a Parquet file."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB (or single-channel) uint8 image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not PNG-encode an array of shape {image.shape}")
    return buf.tobytes()


def decode_png(data: bytes, *, color: bool = True) -> np.ndarray:
    """RGB uint8 image (or single channel with color=False) from PNG bytes."""
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None:
        raise ImageReadError("could not decode PNG bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color and image.ndim == 3 else image


def encode_raw(image: np.ndarray) -> bytes:
    """Channel-preserving PNG bytes (no RGB/BGR swap): for IUV images and other label maps."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f"could not PNG-encode an array of shape {image.shape}")
    return buf.tobytes()


def decode_raw(data: bytes) -> np.ndarray:
    """Inverse of encode_raw: the array exactly as it was stored."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError("could not decode PNG bytes")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 [H, W, 3]; raises ImageReadError naming the path if missing, unreadable or truncated."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or _is_truncated_jpeg(path, data):
        raise ImageReadError(f"unreadable or truncated image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _is_truncated_jpeg(path: Path, data: np.ndarray) -> bool:
    # OpenCV decodes a truncated JPEG with a warning and grey filler; the missing
    # end-of-image marker (FF D9) is the reliable sign.
    if path.suffix.lower() not in {".jpg", ".jpeg"}:
        return False
    tail = data[-16:].tobytes()
    return b"\xff\xd9" not in tail


def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> None:
    """Write an RGB uint8 image atomically; format from the suffix (.png lossless, .jpg JPEG)."""
    path = Path(path)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in {".jpg", ".jpeg"} else []
    ok, buf = cv2.imencode(path.suffix, bgr, params)
    if not ok:
        raise ValueError(f"could not encode image for {path}")
    write_bytes_atomic(path, buf.tobytes())
