"""Densely semantically aligned part images (DSAP-images, DSA-reID §3.1; SPEC §2, §6).

Each foreground pixel of a crop carries DensePose semantics (part i, u, v); it is copied to
row min(floor(u*S), S-1), column min(floor(v*S), S-1) of DSAP image i-1 (reid.parts.dsap_cell).
Cells no pixel reaches keep the crop's mean colour. When several pixels hit one cell:

* ``collision="mean"`` (default) averages them, rounded half up: floor(sum / n + 1/2), exact (integer
  sums; the crop's mean colour for unreached cells is rounded the same way);
* ``collision="last"`` keeps the last pixel in row-major order (the paper copies one pixel).

The warp is batched and vectorised: one flat cell index ``((b*24 + i-1)*S + row)*S + col`` per
foreground pixel, pixels grouped by cell without sorting, then one or two bincounts (mean) or
an unbuffered maximum of pixel positions (last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from reid.io import atomic_path, decode_raw, read_image
from reid.parts import N_PARTS, PART_NAMES, dsap_cell
from reid.viz import colorize_iuv, make_grid

Collision = Literal["mean", "last"]
COLLISIONS: tuple[str, ...] = ("mean", "last")


MIN_GRID = 4  # the smallest S the DSAG-Stream can take: two stride-2 stages leave it a 1 x 1 map


@dataclass
class DSAPConfig:
    """The `dsap` params section."""

    grid: int = 32  # S, warp's `size`; not named `size`: DVC's run-cache ignores a param of that name
    collision: Collision = "mean"
    batch_size: int = 64
    n_samples: int = 4  # crops drawn in the sample picture

    def validate(self) -> None:
        if self.grid < MIN_GRID:
            raise ValueError(f"grid must be >= {MIN_GRID} (the DSAG-Stream halves S twice before its heads), "
                             f"got {self.grid}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")


def _cell_lut(size: int) -> np.ndarray:
    # The DSAP row/column of every quantised U (or V) byte, through the one convention helper;
    # u = byte / 255 exactly as reid.parts.decode_iuv computes it.
    row, _ = dsap_cell(np.arange(256, dtype=np.float32) / np.float32(255.0), np.zeros(256), size)
    return row.astype(np.int64)


def _check_inputs(images: np.ndarray, iuvs: np.ndarray, size: int, collision: str) -> None:
    for name, arr in (("images", images), ("iuvs", iuvs)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            desc = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ValueError(f"warp: {name} must be a uint8 array [B, H, W, 3], got {desc}")
    if images.shape != iuvs.shape:
        raise ValueError(f"warp: IUV size {iuvs.shape[1:3]} differs from image size {images.shape[1:3]} "
                         f"(images {images.shape}, iuvs {iuvs.shape})")
    if collision not in COLLISIONS:
        raise ValueError(f"warp: collision must be one of {COLLISIONS}, got {collision!r}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"warp: size must be a positive integer, got {size!r}")


def mean_colours(images: np.ndarray) -> np.ndarray:
    """Per-image mean colour over the whole crop, rounded half up: uint8 [B, 3]."""
    n = images.shape[1] * images.shape[2]
    if n == 0:
        return np.zeros((images.shape[0], 3), np.uint8)
    # cv2.sumElems: exact float64 sums of bytes, an order of magnitude faster than numpy's strided sum.
    sums = np.array([cv2.sumElems(np.ascontiguousarray(im))[:3] for im in images], dtype=np.int64).reshape(-1, 3)
    return ((2 * sums + n) // (2 * n)).astype(np.uint8)


def warp_with_coverage(
    images: np.ndarray, iuvs: np.ndarray, size: int = 32, collision: Collision = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """(DSAP uint8 [B, 24, S, S, 3], coverage float32 [B, 24]) from uint8 [B, H, W, 3] crops and IUVs.

    Coverage is the fraction of part i's S*S cells that at least one pixel reached.
    Raises ValueError on wrong dtypes/shapes, an IUV whose size differs from its image,
    or a part index above 24.
    """
    _check_inputs(images, iuvs, size, collision)
    b, s = images.shape[0], int(size)
    n_cells = b * N_PARTS * s * s
    out = np.empty((b, N_PARTS * s * s, 3), dtype=np.uint8)
    fill = mean_colours(images)
    for k in range(3):  # one strided pass per channel beats a broadcast of 3-byte pixels
        out[..., k] = fill[:, k, None]
    out = out.reshape(n_cells, 3)

    flat_iuv = iuvs.reshape(-1, 3)
    if flat_iuv.size and flat_iuv[:, 0].max() > N_PARTS:
        raise ValueError(f"warp: IUV holds part index {int(flat_iuv[:, 0].max())} > {N_PARTS}")
    pix = np.flatnonzero(flat_iuv[:, 0])                 # foreground pixels, row-major, image by image
    fg_iuv = np.take(flat_iuv, pix, axis=0)
    colours = np.take(images.reshape(-1, 3), pix, axis=0)
    index_t = np.int32 if n_cells < 2**31 else np.int64
    batch = (pix // (images.shape[1] * images.shape[2])).astype(index_t)
    lut = _cell_lut(s).astype(index_t)
    cell = ((batch * N_PARTS + fg_iuv[:, 0] - 1) * s + lut[fg_iuv[:, 1]]) * s + lut[fg_iuv[:, 2]]

    group, hit = _group_by_cell(cell, n_cells)
    if collision == "mean":
        values = _group_means(group, colours, hit.size)
    else:
        values = _group_last(group, colours, hit.size)
    out[hit] = values
    # `hit` lists each reached cell once; cells of one (image, part) are s*s consecutive indices.
    coverage = (np.bincount(hit // (s * s), minlength=b * N_PARTS) / (s * s)).astype(np.float32)
    return out.reshape(b, N_PARTS, s, s, 3), coverage.reshape(b, N_PARTS)


def _group_by_cell(cell: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(group id per pixel in 0..k-1, the k distinct cells in first-seen order), without sorting.

    Every pixel stamps its own position into a scratch array at its cell; whichever stamp
    survives (NumPy does not promise which), all pixels of a cell read back the same one, and
    the pixel that reads its own position leads the group. No dense pass over all cells.
    """
    index_t = np.int32 if cell.size < 2**31 else np.int64  # half the scratch memory traffic
    stamp = np.empty(n_cells, dtype=index_t)
    position = np.arange(cell.size, dtype=index_t)
    stamp[cell] = position
    leader = stamp[cell]
    is_leader = leader == position
    group_of_leader = np.cumsum(is_leader) - 1
    return group_of_leader[leader], cell[is_leader]


def _group_means(group: np.ndarray, colours: np.ndarray, k: int) -> np.ndarray:
    """Per-group channel means rounded half up (exact).

    Channel sums share one float64 bincount when exact (weights below 2^53): each channel
    sum needs `bits` bits, so 53 // bits channels fit one pass (all three up to 514 pixels a cell).
    """
    n = np.bincount(group, minlength=k)
    bits = int(255 * n.max()).bit_length() if k else 1
    per_pass = max(1, min(3, 53 // bits))
    c = colours.astype(np.int64)
    sums = np.empty((k, 3), dtype=np.int64)
    for first in range(0, 3, per_pass):
        chans = range(first, min(3, first + per_pass))
        packed = np.zeros(len(c), dtype=np.int64)
        for ch in chans:
            packed = (packed << bits) | c[:, ch]
        total = np.bincount(group, weights=packed, minlength=k).astype(np.int64)
        for ch in reversed(chans):
            sums[:, ch] = total & ((1 << bits) - 1)
            total >>= bits
    # floor(sum / n + 1/2) in float64 is exact here: a true mean is at least 1/(2n) away from a
    # rounding boundary unless it lies on one, far above float64's error (and 3x faster than //).
    return np.floor(sums / n[:, None] + 0.5).astype(np.uint8)


def _group_last(group: np.ndarray, colours: np.ndarray, k: int) -> np.ndarray:
    """Colour of each group's last pixel in row-major order: the largest pixel position per group."""
    last = np.zeros(k, dtype=np.int64)
    np.maximum.at(last, group, np.arange(group.size, dtype=np.int64))
    return colours[last]


def warp(images: np.ndarray, iuvs: np.ndarray, size: int = 32, collision: Collision = "mean") -> np.ndarray:
    """DSAP-images uint8 [B, 24, S, S, 3] of uint8 [B, H, W, 3] crops and their IUV images."""
    return warp_with_coverage(images, iuvs, size, collision)[0]


def dsap_grid(dsap: np.ndarray, cell: int = 96) -> np.ndarray:
    """RGB picture of one sample's 24 DSAP images: 4 rows x 6 columns, captioned with part names."""
    if dsap.ndim != 4 or dsap.shape[0] != N_PARTS or dsap.shape[-1] != 3:
        raise ValueError(f"dsap_grid: expected [24, S, S, 3], got {dsap.shape}")
    names = [PART_NAMES[i + 1] for i in range(N_PARTS)]
    return make_grid(list(dsap), ncols=6, captions=names, cell_size=(cell, cell))


def sample_picture(rows: Sequence[Sequence[np.ndarray]], height: int = 256) -> np.ndarray:
    """One picture row per (crop, colourised IUV, DSAP grid[, more panels, e.g. the pseudo texture]),
    each panel scaled to `height`, 4 white pixels apart."""
    if not rows:
        raise ValueError("sample_picture needs at least one row")
    lines = []
    gap = np.full((height, 4, 3), 255, np.uint8)
    for panels in rows:
        parts = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height),
                            interpolation=cv2.INTER_NEAREST) for im in panels]
        lines.append(np.concatenate([x for part in parts for x in (part, gap)][:-1], axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.concatenate(lines, axis=0)


# --- the dsap stage: data/iuv.parquet + crops -> data/dsap.parquet -------------------------------

def dsap_schema(size: int, collision: str) -> pa.Schema:
    """image_id, dsap (24*S*S*3 bytes, [24, S, S, 3] C-order), coverage (24 float32), found; S and policy in metadata."""
    return pa.schema([
        ("image_id", pa.string()),
        ("dsap", pa.binary(N_PARTS * size * size * 3)),
        ("coverage", pa.list_(pa.float32(), N_PARTS)),
        ("found", pa.bool_()),
    ], metadata={"size": str(size), "collision": collision, "layout": "uint8 [24, S, S, 3], part i at index i-1"})


def read_dsap(row_bytes: bytes, size: int) -> np.ndarray:
    """The uint8 [24, S, S, 3] DSAP images of one `dsap` cell."""
    return np.frombuffer(row_bytes, dtype=np.uint8).reshape(N_PARTS, size, size, 3)


def _warp_mixed_sizes(images: list[np.ndarray], iuvs: list[np.ndarray], size: int,
                      collision: Collision) -> tuple[np.ndarray, np.ndarray]:
    # warp wants one [B, H, W, 3] array: group the batch by crop size (real datasets vary).
    out = np.empty((len(images), N_PARTS, size, size, 3), np.uint8)
    cover = np.empty((len(images), N_PARTS), np.float32)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for k, image in enumerate(images):
        shapes.setdefault(image.shape, []).append(k)
    for idx in shapes.values():
        out[idx], cover[idx] = warp_with_coverage(np.stack([images[k] for k in idx]),
                                                  np.stack([iuvs[k] for k in idx]), size, collision)
    return out, cover


def run_dsap(iuv_path: Path, manifest: pa.Table, root: Path, out_path: Path, config: DSAPConfig,
             ) -> tuple[dict[str, float | int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Warp every crop of `iuv_path` into DSAP images, write `out_path` atomically.

    Returns (summary stats, sample rows for `sample_picture`). Crops flagged not-found get
    all-mean-colour DSAP images and coverage 0 (the row's `found` says so).
    """
    path_of = dict(zip(manifest.column("image_id").to_pylist(), manifest.column("path").to_pylist(), strict=True))
    source = pq.ParquetFile(iuv_path)
    n_rows = source.metadata.num_rows
    picks = set(np.linspace(0, n_rows - 1, config.n_samples).round().astype(int).tolist()) if n_rows else set()
    samples = []
    schema = dsap_schema(config.grid, config.collision)
    cover_sum = np.zeros(N_PARTS, np.float64)
    n_found = row = parts_seen = 0
    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema) as writer, \
            tqdm(total=n_rows, desc="dsap", unit="img", mininterval=1.0) as bar:
        for batch in source.iter_batches(batch_size=config.batch_size, columns=["image_id", "iuv", "found"]):
            ids = batch.column("image_id").to_pylist()
            found = batch.column("found").to_pylist()
            images, iuvs = [], []
            for image_id, blob, ok in zip(ids, batch.column("iuv").to_pylist(), found, strict=True):
                if image_id not in path_of:
                    raise KeyError(f"{iuv_path}: image_id {image_id!r} is not in the manifest")
                crop = Path(path_of[image_id])
                image = read_image(crop if crop.is_absolute() else Path(root) / crop)
                iuv = decode_raw(blob)
                if iuv.shape != image.shape:
                    raise ValueError(f"{iuv_path}: IUV of {image_id} is {iuv.shape}, its crop {crop} is {image.shape}")
                images.append(image)
                iuvs.append(iuv if ok else np.zeros_like(iuv))  # a not-found row never warps stray labels
            dsaps, cover = _warp_mixed_sizes(images, iuvs, config.grid, config.collision)
            writer.write_table(pa.table({
                "image_id": pa.array(ids, pa.string()),
                "dsap": pa.array([d.tobytes() for d in dsaps], schema.field("dsap").type),
                "coverage": pa.FixedSizeListArray.from_arrays(pa.array(cover.reshape(-1), pa.float32()), N_PARTS),
                "found": pa.array(found, pa.bool_()),
            }, schema=schema))
            for k in range(len(ids)):
                if row + k in picks:
                    samples.append((images[k], colorize_iuv(iuvs[k]), dsap_grid(dsaps[k])))
            cover_sum += cover.sum(axis=0)
            parts_seen += int(np.count_nonzero(cover))
            n_found += sum(found)
            row += len(ids)
            bar.update(len(ids))
        if n_rows == 0:
            writer.write_table(schema.empty_table())
    # mean_parts_seen: parts that at least one pixel reached, per crop (of 24); unlike the coverage it does
    # not shrink as S grows (ground-truth IUVs of the synthetic world: 19.4; reid.densepose.quality floors)
    stats = {"n_images": row, "n_not_found": row - n_found,
             "mean_coverage": float(cover_sum.sum() / max(row * N_PARTS, 1)),
             "mean_parts_seen": parts_seen / max(row, 1)}
    return stats, samples
