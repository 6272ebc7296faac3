"""File I/O shared by every stage: atomic writes, image decoding, Parquet helpers, file hashes.

Outputs are always written to a temporary file in the destination folder and renamed
into place, so a killed stage never leaves a half-written file under the output's name. The
temporary names (``.<name>.<random>.tmp``) are excluded from DVC by .dvcignore; the next write of the
same file deletes those a killed one left, and `remove_stale_temps` clears a whole folder that outlives
a run (a checkpoint folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reid.config import InputError

# atomic_path's temporary files are `.<name>.<random>.tmp`; .dvcignore holds the same pattern.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


class ImageReadError(InputError):
    """An image file that is missing, unreadable or truncated."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, of=path.name)  # what a killed earlier write of this file left
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
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


def is_temp_name(name: str, of: str | None = None) -> bool:
    """Whether `name` has the form of an atomic_path temporary file (of the file named `of`, if given:
    ``.<of>.<8 random characters>.tmp``, as tempfile.mkstemp names it)."""
    if of is not None:
        return re.fullmatch(rf"{re.escape(TEMP_PREFIX + of)}\.[A-Za-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}", name) is not None
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and len(name) > len(TEMP_PREFIX + TEMP_SUFFIX)


def remove_stale_temps(folder: str | os.PathLike, of: str | None = None) -> list[Path]:
    """Delete the atomic_path temporary files directly in `folder` (left there by a killed write), or only
    those of the file named `of`; return them.

    atomic_path calls it for the file it writes. Call it for a whole folder before writing into one that
    outlives a run (a checkpoint folder), and from one process only: a temporary file of a write in
    progress would go too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if is_temp_name(p.name, of) and p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_torch_atomic(path: str | os.PathLike, obj: Any) -> None:
    """`torch.save(obj)` to `path`, atomically and byte-reproducibly.

    Serialised in memory first: torch names the zip's inner folder after the file it writes (and
    its `.data/serialization_id` hashes the record names), so saving straight to a random temp name
    would make identical contents differ in bytes, and in DVC hash.
    """
    import torch  # here, not at the top: most stages write no network file and need not load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


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


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 16 MiB chunks (ties outputs to the exact inputs that made them)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


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
    if image is None or _is_truncated_jpeg(data.tobytes()):
        raise ImageReadError(f"unreadable or truncated image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = b"\xff\xd8", 0xD9, 0xDA
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: markers without a length field
# The marker that ends an entropy-coded scan: FF not followed by 00 (a stuffed FF), RSTn or FF (fill).
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _is_truncated_jpeg(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG with a warning and grey filler, so read_image checks the
    # structure itself: JPEG bytes (by content, whatever the suffix) must reach the image's EOI.
    return data.startswith(_JPEG_SOI) and jpeg_end(data) is None


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the EOI marker that ends the JPEG image in `data`, or None if the bytes end first.

    Walks the marker segments, skipping each by its length (so the EOI of an EXIF thumbnail is
    not taken for the image's), and the entropy-coded scans. Bytes after the EOI, such as the
    padding some cameras and tools append, are not looked at; libjpeg ignores them too.
    """
    pos = len(_JPEG_SOI)
    while True:
        pos = data.find(b"\xff", pos)  # like libjpeg, skip stray bytes before a marker
        while 0 <= pos < len(data) - 1 and data[pos + 1] == 0xFF:  # fill bytes before the marker code
            pos += 1
        if pos < 0 or pos + 1 >= len(data):
            return None
        code = data[pos + 1]
        if code == _JPEG_EOI:
            return pos + 2
        if code in _JPEG_NO_LENGTH or code == 0x00:
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        segment_end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if segment_end > len(data):
            return None
        if code != _JPEG_SOS:
            pos = segment_end
            continue
        scan_end = _JPEG_SCAN_END.search(data, segment_end)
        if scan_end is None:
            return None
        pos = scan_end.start()


def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> None:
    """Write an RGB uint8 image atomically; format from the suffix (.png lossless, .jpg JPEG)."""
    path = Path(path)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in {".jpg", ".jpeg"} else []
    ok, buf = cv2.imencode(path.suffix, bgr, params)
    if not ok:
        raise ValueError(f"could not encode image for {path}")
    write_bytes_atomic(path, buf.tobytes())
