"""Pictures a person would rather look at: colourised IUV, image grids with captions, letterboxing.

Specialised pictures (DSAP grids, ranked lists, contact sheets) live beside the code that
makes their data and build on these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from reid.parts import N_PARTS, decode_iuv


def _part_palette() -> np.ndarray:
    # Evenly spaced hues so neighbouring part indices look different; background black.
    hsv = np.zeros((N_PARTS + 1, 1, 3), dtype=np.uint8)
    hsv[1:, 0, 0] = (np.arange(N_PARTS) * 7 % N_PARTS) * 180 // N_PARTS
    hsv[1:, 0, 1] = 200
    hsv[1:, 0, 2] = 255
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:, 0]
    rgb[0] = 0
    return rgb


PART_PALETTE: np.ndarray = _part_palette()


def colorize_iuv(iuv: np.ndarray) -> np.ndarray:
    """RGB picture of an IUV image: hue from the part, brightness modulated by U and V stripes."""
    parts, u, v = decode_iuv(iuv)
    base = PART_PALETTE[parts].astype(np.float32)
    stripes = 0.65 + 0.35 * np.cos(2 * np.pi * 4 * u) * np.cos(2 * np.pi * 4 * v)
    out = base * np.where(parts > 0, stripes, 1.0)[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def make_grid(
    images: Sequence[np.ndarray],
    ncols: int,
    *,
    pad: int = 2,
    pad_value: int = 255,
    captions: Sequence[str] | None = None,
    cell_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Tile RGB uint8 images into one picture, resizing each to `cell_size` (H, W) or the first image's size."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    h, w = cell_size or images[0].shape[:2]
    caption_h = 12 if captions else 0
    nrows = (len(images) + ncols - 1) // ncols
    canvas = np.full((nrows * (h + caption_h + pad) + pad, ncols * (w + pad) + pad, 3), pad_value, np.uint8)
    for i, image in enumerate(images):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + caption_h + pad), pad + c * (w + pad)
        canvas[y + caption_h:y + caption_h + h, x:x + w] = image
        if captions:
            cv2.putText(canvas, str(captions[i])[: max(1, w // 6)], (x, y + caption_h - 3),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def add_border(image: np.ndarray, color: tuple[int, int, int], width: int = 3) -> np.ndarray:
    """Copy of `image` with a solid border (e.g. green = correct match, red = wrong)."""
    return cv2.copyMakeBorder(image, width, width, width, width, cv2.BORDER_CONSTANT, value=color)


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 255) -> np.ndarray:
    """`image` scaled to fit (H, W) with its aspect kept, centred on a `pad_value` canvas."""
    h, w = size
    scale = min(h / image.shape[0], w / image.shape[1])
    nh, nw = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    canvas = np.full((h, w, 3), pad_value, np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    canvas[y:y + nh, x:x + nw] = resized
    return canvas
