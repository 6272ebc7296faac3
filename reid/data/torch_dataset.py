"""Torch datasets over the manifest (+ optional DSAP and texture caches), yielding dict samples.

A sample is ``{"image", "label", "index"}`` plus ``"dsap"`` / ``"texture"`` when those caches
are given. Cache bytes stay in their Arrow columns and are decoded per item (no copy of the
whole cache per worker). The caches' Parquet metadata give the sizes a network trained on them must
have: ``size`` = S of a DSAP cache, ``tile`` = T of a texture cache (`cache_shapes`).
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
from reid.data.transforms import dsap_tensor, texture_tensor
from reid.io import decode_png, parquet_metadata, read_image
from reid.parts import N_PARTS


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


def cache_column(path: str | os.PathLike, column: str, image_ids: Sequence[str]) -> tuple[pa.Array, dict[str, str]]:
    """`column` of a per-image cache, reordered to `image_ids`; errors name the file and a missing id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cache not found: {path}")
    table = pq.read_table(path, columns=["image_id", column])
    pos = pc.index_in(pa.array(list(image_ids), pa.string()), value_set=table["image_id"].cast(pa.string()))
    if pos.null_count:
        first = next(i for i, p in zip(image_ids, pos.to_pylist(), strict=True) if p is None)
        raise ValueError(f"{path}: no {column} for {pos.null_count} image(s), e.g. image_id {first!r}")
    return table[column].combine_chunks().take(pos), parquet_metadata(path)


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
        self.dsap: pa.Array | None = None
        self.texture: pa.Array | None = None
        if dsap_path is not None:
            self.dsap, meta = cache_column(dsap_path, "dsap", self.image_ids)
            self.dsap_size = metadata_int(dsap_path, meta, DSAP_SIZE_KEY, "the DSAP image side S")
            expected = N_PARTS * self.dsap_size ** 2 * 3
            if self.dsap.type.byte_width != expected:
                raise ValueError(f"{dsap_path}: dsap entries have {self.dsap.type.byte_width} bytes, "
                                 f"expected 24*S*S*3 = {expected} for S={self.dsap_size}")
            # [N, 24*S*S*3] uint8 view of the column's one buffer: an item is a slice, not a bytes copy
            self._dsap_bytes = np.frombuffer(self.dsap.buffers()[1], np.uint8, count=len(self.dsap) * expected,
                                             offset=self.dsap.offset * expected).reshape(len(self.dsap), expected)
        if texture_path is not None:
            self.texture, _ = cache_column(texture_path, "texture", self.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {"image": self.transform(read_image(self.paths[index])),
                  "label": torch.tensor(self.labels[index]),
                  "index": torch.tensor(index)}
        if self.dsap is not None:
            s = self.dsap_size
            sample["dsap"] = dsap_tensor(self._dsap_bytes[index].reshape(N_PARTS, s, s, 3))
        if self.texture is not None:
            sample["texture"] = texture_tensor(decode_png(self.texture[index].as_py()))
        return sample
