"""The one interface every IUV backend implements (detectron2, precomputed, lite, oracle), and the
one reader of IUV PNG files (precomputed and oracle backends, ground truth for scoring and training)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from reid.io import ImageReadError, decode_raw
from reid.parts import decode_iuv


@dataclass
class IUVResult:
    """IUV (uint8 [H, W, 3], same size as its crop) and whether a person was found."""

    iuv: np.ndarray
    found: bool


class IUVEstimator(Protocol):
    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[IUVResult]:
        """IUV for each RGB uint8 crop; `paths` are the crops' files (precomputed/oracle look up by them)."""
        ...


def read_iuv_png(path: str | Path, image_hw: tuple[int, int]) -> np.ndarray:
    """IUV uint8 [H, W, 3] from a PNG, channels as cv2 reads them (I, U, V), checked against its crop.

    Missing file: FileNotFoundError; undecodable: ImageReadError; not 8-bit 3-channel, a size other
    than `image_hw` or a part index > 24 (reid.parts.decode_iuv): ValueError. Each names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IUV file not found: {path}")
    try:
        iuv = decode_raw(path.read_bytes())  # bytes, not cv2.imread: paths with any characters
    except ImageReadError:
        raise ImageReadError(f"unreadable IUV PNG: {path}") from None
    if iuv.dtype != np.uint8 or iuv.ndim != 3 or iuv.shape[2] != 3:
        raise ValueError(f"{path}: an IUV PNG must be 8-bit with 3 channels, got {iuv.dtype} {iuv.shape}")
    if iuv.shape[:2] != tuple(image_hw):
        raise ValueError(f"{path}: IUV size {iuv.shape[:2]} differs from its crop's {tuple(image_hw)}")
    try:
        decode_iuv(iuv)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return iuv
