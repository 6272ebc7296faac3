"""The pseudo-texture cache (texture stage): SAN-PG on every reID crop, scored against true atlases
where the dataset has them (the synthetic world's textures/<pid>.png)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from reid.data.transforms import model_inputs
from reid.io import atomic_path, read_image
from reid.parts import atlas_shape
from reid.sanpg.config import TextureConfig
from reid.sanpg.data import to_uint8
from reid.sanpg.inference import L1_UNITS, texture_l1

TEST_SPLITS = ("query", "gallery")


def true_atlas_reader(root: str | Path) -> Callable[[int], np.ndarray] | None:
    """pid -> the identity's true atlas from ``root/textures/<pid:04d>.png`` (the synthetic world's ground
    truth, cached per pid), or None when `root` has no textures/ folder (real datasets)."""
    folder = Path(root) / "textures"
    if not folder.is_dir():
        return None
    cache: dict[int, np.ndarray] = {}

    def read(pid: int) -> np.ndarray:
        if pid not in cache:
            cache[pid] = read_image(folder / f"{pid:04d}.png")  # ImageReadError names a missing file
        return cache[pid]

    return read


@dataclass
class TextureScore:
    """Running L1 ([-1, 1] units, all atlas pixels) of pseudo textures and of the mean-texture predictor
    against the true atlas of each image's identity."""

    mean: np.ndarray  # float64 [6T, 4T, 3] in [-1, 1]
    pseudo_sum: float = 0.0
    floor_sum: float = 0.0
    n: int = 0
    pids: set[int] = field(default_factory=set)

    def update(self, pseudo: np.ndarray, true: np.ndarray, pid: int) -> None:
        if pseudo.shape != true.shape:
            raise ValueError(f"true atlas of pid {pid} has shape {true.shape}, pseudo textures {pseudo.shape}")
        self.pseudo_sum += texture_l1(pseudo, true)
        self.floor_sum += texture_l1(self.mean, true)
        self.n += 1
        self.pids.add(pid)

    def summary(self) -> dict[str, float | int | None]:
        if self.n == 0:
            return {"l1_pseudo": None, "l1_mean_texture": None, "gain_over_mean_texture": None,
                    "n_images": 0, "n_identities": 0}
        pseudo, floor = self.pseudo_sum / self.n, self.floor_sum / self.n
        return {"l1_pseudo": round(pseudo, 5), "l1_mean_texture": round(floor, 5),
                "gain_over_mean_texture": round(1 - pseudo / floor, 4) if floor > 0 else None,
                "n_images": self.n, "n_identities": len(self.pids)}


def texture_schema(tile: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    """image_id, texture (the raw uint8 RGB atlas [6T, 4T, 3], C order: 6T*4T*3 bytes); T in the metadata.

    Raw bytes, as the DSAP cache: a training item is a slice of one Arrow buffer, where a PNG cost a decode
    per item per epoch (the loader's bottleneck, bench/bench_loader.py); zstd keeps the file small.
    """
    h, w, c = atlas_shape(tile)
    return pa.schema([("image_id", pa.string()), ("texture", pa.binary(h * w * c))],
                     metadata={"tile": str(tile), "layout": "uint8 [6T, 4T, 3] RGB", **(metadata or {})})


def read_texture(cell: bytes, tile: int) -> np.ndarray:
    """The uint8 [6T, 4T, 3] atlas of one `texture` cell."""
    return np.frombuffer(cell, dtype=np.uint8).reshape(atlas_shape(tile))


@dataclass
class TextureCache:
    n_cached: int  # rows written
    score: TextureScore | None  # None when no true atlases exist
    samples: dict[int, np.ndarray]  # manifest row -> its pseudo texture (for the picture)
    seconds: float

    def metrics(self) -> dict[str, Any]:
        """metrics/texture.json: the cache size and, with true atlases, the scores; no timings."""
        scored = "query + gallery rows with pid > 0 vs textures/<pid>.png" if self.score is not None else "no true textures"
        return {"units": L1_UNITS, "scored": scored, "n_cached": self.n_cached,
                **(self.score.summary() if self.score is not None else {})}

    def timing(self) -> dict[str, float]:
        """The wall-clock figures (kept out of the metrics: they differ on every run)."""
        return {"time_s": round(self.seconds, 1), "images_per_s": round(self.n_cached / max(self.seconds, 1e-9), 1)}


def sample_rows(manifest: pa.Table, n: int) -> list[int]:
    """Up to `n` manifest rows for the picture: test rows (pid > 0) of distinct identities, evenly spread."""
    splits, pids = manifest["split"].to_pylist(), manifest["pid"].to_pylist()
    first: dict[int, int] = {}
    for row, (split, pid) in enumerate(zip(splits, pids, strict=True)):
        if split in TEST_SPLITS and pid > 0:
            first.setdefault(pid, row)
    rows = list(first.values()) or list(range(len(splits)))
    if n == 0 or not rows:
        return []
    return sorted({rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)})


@torch.no_grad()
def build_texture_cache(model: nn.Module, dataset: Dataset, manifest: pa.Table, cfg: TextureConfig,
                        out_path: str | Path, *, tile: int, metadata: dict[str, str] | None = None,
                        device: torch.device, truth: Callable[[int], np.ndarray] | None = None,
                        mean: torch.Tensor | None = None, progress: bool = True) -> TextureCache:
    """SAN-PG on every item of `dataset` (rows of `manifest`, eval transform) -> the cache `out_path`
    (`texture_schema`, written atomically batch by batch: memory stays one batch, whatever the dataset).

    With `truth` (and `mean`), test rows (query/gallery, pid > 0) are scored against their identity's
    true atlas, beside the mean-texture predictor.
    """
    if len(dataset) != manifest.num_rows:
        raise ValueError(f"texture cache: {len(dataset)} dataset items for {manifest.num_rows} manifest rows")
    model.eval().to(device)
    score = TextureScore(mean.permute(1, 2, 0).double().numpy()) if truth is not None and mean is not None else None
    ids, splits, pids = (manifest[c].to_pylist() for c in ("image_id", "split", "pid"))
    shown = set(sample_rows(manifest, cfg.n_samples))
    schema = texture_schema(tile, metadata)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    samples: dict[int, np.ndarray] = {}
    row = 0
    t0 = time.perf_counter()
    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in tqdm(loader, desc="pseudo textures", unit="batch", disable=not progress):
            images = model_inputs({"image": batch["image"].to(device, non_blocking=True)})["image"]
            atlases = to_uint8(model(images))
            if atlases.shape[1:] != atlas_shape(tile):
                raise ValueError(f"texture cache: the model paints {atlases.shape[1:]} atlases, tile {tile} "
                                 f"means {atlas_shape(tile)}")
            for k, atlas in enumerate(atlases, start=row):
                if k in shown:
                    samples[k] = atlas
                if score is not None and splits[k] in TEST_SPLITS and pids[k] > 0:
                    score.update(atlas, truth(pids[k]), pids[k])
            writer.write_table(pa.table({"image_id": pa.array(ids[row:row + len(atlases)], pa.string()),
                                         "texture": pa.array([a.tobytes() for a in atlases], schema.field("texture").type)},
                                        schema=schema))
            row += len(atlases)
        if row == 0:
            writer.write_table(schema.empty_table())
    return TextureCache(row, score, samples, time.perf_counter() - t0)
