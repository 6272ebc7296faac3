"""Torch datasets over the manifest (+ optional DSAP and texture caches), yielding dict samples.

A sample is ``{"image", "label", "index"}`` plus ``"dsap"`` / ``"texture"`` when those caches
are given, every picture uint8 (`reid.data.transforms.model_inputs` makes the floats, per batch).
Both caches hold raw uint8 bytes of one fixed size per row; only the dataset's rows are kept, in one
Arrow buffer per cache that an item slices (no decode, no copy of the cache per worker). The caches'
Parquet metadata give the sizes a network trained on them must have: ``size`` = S of a DSAP cache,
``tile`` = T of a texture cache (`cache_shapes`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from reid.data.manifest import read_manifest
from reid.io import parquet_metadata, read_image
from reid.parts import N_PARTS, atlas_shape


def manifest_split(path: str | os.PathLike, splits: Sequence[str] | None = None) -> pa.Table:
    """Manifest rows of `splits` (all when None) with `path` made usable: root / path (absolute stays)."""
    table, root = read_manifest(path)
    if splits is not None:
        table = table.filter(pc.is_in(table["split"], pa.array(list(splits))))
    return rooted(table, root)


def rooted(table: pa.Table, root: str | os.PathLike) -> pa.Table:
    """Manifest rows with `path` made usable: root / path (an absolute path stays as it is)."""
    paths = [str(Path(root) / p) for p in table["path"].to_pylist()]
    return table.set_column(table.column_names.index("path"), "path", pa.array(paths, pa.string()))


def cache_column(path: str | os.PathLike, column: str, image_ids: Sequence[str], *,
                 batch_rows: int = 1024) -> tuple[pa.Array, dict[str, str]]:
    """`column` of a per-image cache, reordered to `image_ids`; errors name the file and a missing id.

    Read row group by row group, keeping only the rows of `image_ids`: a training split of a cache holds
    a fraction of its bytes in memory, never the whole cache (DSAP images at S = 32 and atlases at T = 32
    are 74 kB a crop: 9 GB for MSMT17's 126k crops).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cache not found: {path}")
    wanted = pa.array(list(image_ids), pa.string())
    kept_ids, kept = [], []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["image_id", column]):
        batch_ids = batch.column("image_id").cast(pa.string())
        mask = pc.is_in(batch_ids, value_set=wanted)
        if pc.any(mask).as_py():
            kept_ids.append(pc.filter(batch_ids, mask))
            kept.append(pc.filter(batch.column(column), mask))
    ids = pa.concat_arrays(kept_ids) if kept_ids else pa.array([], pa.string())
    pos = pc.index_in(wanted, value_set=ids)
    if pos.null_count:
        first = next(i for i, p in zip(image_ids, pos.to_pylist(), strict=True) if p is None)
        raise ValueError(f"{path}: no {column} for {pos.null_count} image(s), e.g. image_id {first!r}")
    values = pa.concat_arrays(kept) if kept else pa.array([], pq.read_schema(path).field(column).type)
    return values.take(pos), parquet_metadata(path)


def fixed_bytes_rows(path: str | os.PathLike, cells: pa.Array, shape: tuple[int, ...], what: str) -> np.ndarray:
    """uint8 [N, *shape] view of a fixed-size binary column (one buffer, no copy); its byte width must be
    the product of `shape` (an error names the file)."""
    width = int(np.prod(shape))
    if not pa.types.is_fixed_size_binary(cells.type) or cells.type.byte_width != width:
        raise ValueError(f"{path}: {what} entries are {cells.type}, expected fixed_size_binary[{width}] "
                         f"(uint8 {list(shape)}): re-run the stage that writes it")
    cells = cells.combine_chunks() if isinstance(cells, pa.ChunkedArray) else cells
    if cells.null_count:
        raise ValueError(f"{path}: {cells.null_count} {what} entries are null")
    return np.frombuffer(cells.buffers()[1], np.uint8, count=len(cells) * width,
                         offset=cells.offset * width).reshape(len(cells), *shape)


DSAP_SIZE_KEY, TEXTURE_TILE_KEY = "size", "tile"  # cache metadata written by the dsap / texture stages


def metadata_int(path: str | os.PathLike, meta: dict[str, str], key: str, what: str) -> int:
    if key not in meta:
        raise ValueError(f"{path}: schema metadata lacks {key!r} ({what})")
    try:
        return int(meta[key])
    except ValueError:
        raise ValueError(f"{path}: schema metadata {key!r} = {meta[key]!r} is not an integer ({what})") from None


def dsap_size(path: str | os.PathLike) -> int:
    """S of a DSAP cache (entries 24 x S x S x 3), from its metadata; errors name the file."""
    return metadata_int(path, _cache_metadata(path), DSAP_SIZE_KEY, "the DSAP image side S")


def texture_tile(path: str | os.PathLike) -> int:
    """T of a pseudo-texture cache (atlases 6T x 4T), from its metadata; errors name the file."""
    return metadata_int(path, _cache_metadata(path), TEXTURE_TILE_KEY, "the texture atlas tile T")


def cache_shapes(inputs: Sequence[str], dsap_path: str | os.PathLike,
                 texture_path: str | os.PathLike) -> dict[str, int]:
    """build_model's keyword arguments for a model whose training `inputs` are these cache keys:
    {"dsap_size": S} when it reads "dsap", {"texture_tile": T} when "texture"."""
    shapes = {}
    if "dsap" in inputs:
        shapes["dsap_size"] = dsap_size(dsap_path)
    if "texture" in inputs:
        shapes["texture_tile"] = texture_tile(texture_path)
    return shapes


def _cache_metadata(path: str | os.PathLike) -> dict[str, str]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"cache not found: {path}")
    return parquet_metadata(path)


class ReidDataset(Dataset):
    """Images of manifest rows (train: with augmentation) as dict samples for the engine."""

    def __init__(self, manifest: pa.Table, transform: Callable[[np.ndarray], torch.Tensor], *,
                 dsap_path: str | os.PathLike | None = None,
                 texture_path: str | os.PathLike | None = None) -> None:
        self.image_ids: list[str] = [str(i) for i in manifest["image_id"].to_pylist()]
        self.paths: list[str] = manifest["path"].to_pylist()
        # query/gallery rows have no train label: -1
        self.labels = manifest["label"].fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        self.transform = transform
        self.dsap: np.ndarray | None = None  # uint8 [N, 24, S, S, 3]
        self.texture: np.ndarray | None = None  # uint8 [N, 6T, 4T, 3]
        if dsap_path is not None:
            cells, meta = cache_column(dsap_path, "dsap", self.image_ids)
            self.dsap_size = metadata_int(dsap_path, meta, DSAP_SIZE_KEY, "the DSAP image side S")
            s = self.dsap_size
            self.dsap = fixed_bytes_rows(dsap_path, cells, (N_PARTS, s, s, 3), "dsap")
        if texture_path is not None:
            cells, meta = cache_column(texture_path, "texture", self.image_ids)
            self.texture_tile = metadata_int(texture_path, meta, TEXTURE_TILE_KEY, "the texture atlas tile T")
            self.texture = fixed_bytes_rows(texture_path, cells, atlas_shape(self.texture_tile), "texture")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {"image": self.transform(read_image(self.paths[index])),
                  "label": torch.tensor(self.labels[index]),
                  "index": torch.tensor(index)}
        if self.dsap is not None:
            sample["dsap"] = torch.from_numpy(self.dsap[index].copy())  # the copy: the cache buffer is read-only
        if self.texture is not None:
            sample["texture"] = torch.from_numpy(self.texture[index].copy())
        return sample
