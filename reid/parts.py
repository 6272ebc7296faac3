"""Body-part, IUV, DSAP and texture-atlas conventions (SPEC §2).

Every other module imports these names; nothing else hard-codes a part index,
a pair list or an atlas offset.

Part indices follow DensePose (0 = background)::

    1 torso back   2 torso front   3 right hand   4 left hand   5 left foot   6 right foot
    7/8 upper leg R/L back   9/10 upper leg R/L front   11/12 lower leg R/L back
    13/14 lower leg R/L front   15/16 upper arm L/R front   17/18 upper arm L/R back
    19/20 lower arm L/R front   21/22 lower arm L/R back   23/24 head right/left side
"""

from __future__ import annotations

import numpy as np

N_PARTS = 24
N_CLASSES = N_PARTS + 1  # with background

PART_NAMES: dict[int, str] = {
    1: "torso_back", 2: "torso_front", 3: "hand_r", 4: "hand_l", 5: "foot_l", 6: "foot_r",
    7: "upper_leg_r_back", 8: "upper_leg_l_back", 9: "upper_leg_r_front", 10: "upper_leg_l_front",
    11: "lower_leg_r_back", 12: "lower_leg_l_back", 13: "lower_leg_r_front", 14: "lower_leg_l_front",
    15: "upper_arm_l_front", 16: "upper_arm_r_front", 17: "upper_arm_l_back", 18: "upper_arm_r_back",
    19: "lower_arm_l_front", 20: "lower_arm_r_front", 21: "lower_arm_l_back", 22: "lower_arm_r_back",
    23: "head_r", 24: "head_l",
}

LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = (
    (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14),
    (15, 16), (17, 18), (19, 20), (21, 22), (23, 24),
)
FRONT_BACK_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (7, 9), (8, 10), (11, 13), (12, 14), (15, 17), (16, 18), (19, 21), (20, 22),
)

# DSAG-Stream branch merging (DSA §3.2.1, Fig. 4).
# First merge: 24 branches -> 13 by adding each left/right pair; torso back/front stay alone.
FIRST_MERGE: tuple[tuple[int, ...], ...] = ((1,), (2,)) + LEFT_RIGHT_PAIRS
# Second merge: the 13 -> 8 body groups, given as part indices.
GROUP_NAMES: tuple[str, ...] = (
    "torso", "upper_legs", "lower_legs", "upper_arms", "lower_arms", "hands", "feet", "head",
)
PART_GROUPS: tuple[tuple[int, ...], ...] = (
    (1, 2), (7, 8, 9, 10), (11, 12, 13, 14), (15, 16, 17, 18), (19, 20, 21, 22), (3, 4), (5, 6), (23, 24),
)


def second_merge() -> tuple[tuple[int, ...], ...]:
    """The 8 groups as indices into FIRST_MERGE (13 -> 8)."""
    return tuple(
        tuple(i for i, first in enumerate(FIRST_MERGE) if set(first) <= set(group))
        for group in PART_GROUPS
    )


def _mirror_table() -> np.ndarray:
    table = np.arange(N_CLASSES, dtype=np.uint8)
    for a, b in LEFT_RIGHT_PAIRS:
        table[a], table[b] = b, a
    return table


# MIRROR_PART[p] is the part that p becomes under a left/right mirror (0, 1, 2 map to themselves).
MIRROR_PART: np.ndarray = _mirror_table()


# --- IUV images: uint8 [H, W, 3] = (I, round(U*255), round(V*255)); background (0, 0, 0) ---

def encode_iuv(parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """IUV image from a part-index map and float U, V maps (clamped to [0, 1]).

    U and V are zeroed on background so background pixels are exactly (0, 0, 0).
    """
    parts = np.asarray(parts)
    if parts.size and (parts.min() < 0 or parts.max() > N_PARTS):
        raise ValueError(f"part indices must lie in 0..{N_PARTS}, got {parts.min()}..{parts.max()}")
    fg = parts > 0
    iuv = np.zeros(parts.shape + (3,), dtype=np.uint8)
    iuv[..., 0] = parts
    iuv[..., 1] = np.where(fg, np.rint(np.clip(u, 0.0, 1.0) * 255.0), 0)
    iuv[..., 2] = np.where(fg, np.rint(np.clip(v, 0.0, 1.0) * 255.0), 0)
    return iuv


def decode_iuv(iuv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(parts int64, U float32, V float32) from IUV images [..., 3]; validates part indices."""
    iuv = np.asarray(iuv)
    if iuv.dtype != np.uint8 or iuv.shape[-1] != 3:
        raise ValueError(f"IUV must be uint8 [..., 3], got {iuv.dtype} {iuv.shape}")
    parts = iuv[..., 0].astype(np.int64)
    if parts.size and parts.max() > N_PARTS:
        raise ValueError(f"part index {parts.max()} > {N_PARTS} in IUV channel 0")
    return parts, iuv[..., 1].astype(np.float32) / 255.0, iuv[..., 2].astype(np.float32) / 255.0


# --- DSAP cells: part i's pixel (u, v) -> row min(floor(u*S), S-1), column min(floor(v*S), S-1) ---

def dsap_cell(u: np.ndarray, v: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) integer arrays of the DSAP cell for semantics (u, v) in [0, 1]."""
    row = np.minimum(np.floor(np.asarray(u) * size), size - 1).astype(np.int64)
    col = np.minimum(np.floor(np.asarray(v) * size), size - 1).astype(np.int64)
    return row, col


# --- Texture atlas: uint8 [6T, 4T, 3]; part p at tile row (p-1) % 6, tile column (p-1) // 6 ---

def atlas_shape(tile: int) -> tuple[int, int, int]:
    return (6 * tile, 4 * tile, 3)


def atlas_tile_origin(part: int | np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left (row, col) pixel of part's tile in the atlas."""
    p = np.asarray(part) - 1
    return (p % 6) * tile, (p // 6) * tile


def atlas_pixel(part: np.ndarray, u: np.ndarray, v: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Atlas (row, col) of semantics (part, u, v): column floor(U*T), row floor((1-V)*T), clamped."""
    r0, c0 = atlas_tile_origin(part, tile)
    col = np.minimum(np.floor(np.asarray(u) * tile), tile - 1).astype(np.int64)
    row = np.minimum(np.floor((1.0 - np.asarray(v)) * tile), tile - 1).astype(np.int64)
    return r0 + row, c0 + col


def atlas_tile(atlas: np.ndarray, part: int) -> np.ndarray:
    """The [T, T, 3] tile of `part` in an atlas."""
    tile = atlas.shape[1] // 4
    r0, c0 = atlas_tile_origin(part, tile)
    return atlas[int(r0):int(r0) + tile, int(c0):int(c0) + tile]


def atlas_tile_as_dsap(tile_image: np.ndarray) -> np.ndarray:
    """An atlas tile laid out as a DSAP image of the same size.

    DSAP puts u on rows and v on columns; the atlas puts u on columns and 1-v on rows.
    So the DSAP image is the atlas tile rotated 90 degrees clockwise (SPEC §2 calls it a
    vertical flip, which holds only for the row axis; the axes are also swapped).
    Cells agree exactly except where v*T is an integer (floor((1-v)T) != T-1-floor(vT)).
    """
    return np.ascontiguousarray(np.rot90(tile_image, k=-1))


def sample_atlas(atlas: np.ndarray, iuv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Atlas colour at every foreground pixel of an IUV image: (colours [N, 3], mask [H, W])."""
    parts, u, v = decode_iuv(iuv)
    mask = parts > 0
    rows, cols = atlas_pixel(parts[mask], u[mask], v[mask], atlas.shape[1] // 4)
    return atlas[rows, cols], mask
