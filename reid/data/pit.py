"""Paired-Image-Texture (PIT) folders: ``images/<stem>``, ``textures/<stem>``, optional ``gt_iuv/<stem>``.

The synthetic PIT export (SPEC §3) and a real PIT set laid out the same way load through
`load_pit_pairs`. Files are paired by stem, whatever the image suffix (.png, .jpg).
Textures use the atlas layout of `reid.parts`; IUV maps are stored channel-preserving
(I in channel 0 as OpenCV reads them, see `reid.io.encode_raw`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reid.data.datasets import IMAGE_SUFFIXES, DatasetError
from reid.io import ImageReadError, read_image


@dataclass(frozen=True, order=True)
class PitPair:
    stem: str
    image: Path
    texture: Path
    gt_iuv: Path | None  # None when the folder has no gt_iuv/


def _files_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
            continue
        if path.stem in files:
            raise DatasetError(f"two files with stem {path.stem!r}: {files[path.stem]} and {path}")
        files[path.stem] = path
    if not files:
        raise DatasetError(f"no images in folder: {folder}")
    return files


def load_pit_pairs(root: str | os.PathLike) -> list[PitPair]:
    """All (image, texture[, gt_iuv]) pairs under `root`, sorted by stem.

    Every stem must appear in images/ and textures/ (and in gt_iuv/ when that folder
    exists); otherwise one DatasetError lists every unpaired stem and where it is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"folder not found: {root}")
    folders = {"images": _files_by_stem(root / "images"), "textures": _files_by_stem(root / "textures")}
    if (root / "gt_iuv").is_dir():
        folders["gt_iuv"] = _files_by_stem(root / "gt_iuv")
    stems = sorted(set().union(*folders.values()))
    unpaired = [f"{stem} (missing in {', '.join(n for n, f in folders.items() if stem not in f)})"
                for stem in stems if any(stem not in f for f in folders.values())]
    if unpaired:
        raise DatasetError(f"{root}: {len(unpaired)} unpaired stem(s):\n  " + "\n  ".join(unpaired))
    iuv = folders.get("gt_iuv")
    return [PitPair(s, folders["images"][s], folders["textures"][s], iuv[s] if iuv else None) for s in stems]


def read_iuv(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] IUV map exactly as stored (no channel swap); error names the path."""
    data = np.fromfile(path, dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise ImageReadError(f"image not found: {path}")
    iuv = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if iuv is None or iuv.dtype != np.uint8 or iuv.ndim != 3 or iuv.shape[2] != 3:
        raise ImageReadError(f"not a 3-channel uint8 IUV image: {path}")
    return iuv


def read_pit_pair(pair: PitPair) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(person RGB uint8 [H, W, 3], texture atlas RGB uint8, IUV uint8 [H, W, 3] or None)."""
    image = read_image(pair.image)
    texture = read_image(pair.texture)
    iuv = read_iuv(pair.gt_iuv) if pair.gt_iuv is not None else None
    if iuv is not None and iuv.shape[:2] != image.shape[:2]:
        raise ImageReadError(f"{pair.gt_iuv}: IUV size {iuv.shape[:2]} differs from its image {image.shape[:2]}")
    return image, texture, iuv
