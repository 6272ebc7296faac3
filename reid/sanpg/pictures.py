"""SAN-PG pictures: person image / predicted atlas / true atlas, one row per sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from reid.data.transforms import eval_transform
from reid.device import default_device
from reid.io import read_image
from reid.sanpg.config import SanPGConfig
from reid.sanpg.data import PitData, images_tensor, to_uint8
from reid.sanpg.inference import predict_textures
from reid.viz import letterbox, make_grid


def triplet_grid(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], captions: Sequence[str]) -> np.ndarray:
    """One row per (person image, predicted atlas, true atlas or None) at the atlas size; 3 columns."""
    cell = rows[0][1].shape[:2]
    blank = np.full((*cell, 3), 255, np.uint8)
    images = [im for person, pred, true in rows for im in (letterbox(person, cell), pred, blank if true is None else true)]
    return make_grid(images, 3, captions=[c for caption in captions for c in (caption, "predicted", "true")],
                     cell_size=cell)


def sample_grid(model: nn.Module, data: PitData, indices: np.ndarray, cfg: SanPGConfig) -> np.ndarray:
    """samples.png: up to ``cfg.n_samples`` of pairs `indices` (evenly spread), with SAN-PG's atlas."""
    if len(indices) == 0:
        raise ValueError("sample_grid needs at least one pair")
    shown = indices[np.linspace(0, len(indices) - 1, min(cfg.n_samples, len(indices))).round().astype(int)]
    images = images_tensor([data.images[i] for i in shown], eval_transform(cfg.arch().size))
    pred = to_uint8(torch.cat(list(predict_textures(model, images, default_device(cfg.device), cfg.eval_batch_size))))
    rows = [(data.images[i], pred[k], data.textures[data.texture_of[i]]) for k, i in enumerate(shown)]
    return triplet_grid(rows, [data.stems[i] for i in shown])


def cache_sample_grid(samples: dict[int, np.ndarray], manifest: pa.Table,
                      truth: Callable[[int], np.ndarray] | None) -> np.ndarray:
    """texture_samples.png: the cache's sample rows (manifest row -> pseudo atlas), crop read from the
    manifest path, true atlas where `truth` has one."""
    paths, pids = manifest["path"].to_pylist(), manifest["pid"].to_pylist()
    rows = [(read_image(paths[r]), atlas, truth(pids[r]) if truth is not None and pids[r] > 0 else None)
            for r, atlas in sorted(samples.items())]
    return triplet_grid(rows, [f"pid {pids[r]}" for r in sorted(samples)])
