"""Training-loader throughput per core: each model's inputs with augmentation, beside a decode-only floor.

Run: .venv/bin/python bench/bench_loader.py [--n 256] [--height 256] [--width 128] [--grid 32] [--tile 32]

Builds in a temporary folder N person-like 128x64 JPEG crops (the synthetic world's size), a DSAP cache
at S = --grid and a pseudo-texture cache (raw uint8 atlases 6T x 4T, T = --tile) as the dsap and texture
stages write them. Then, in this process on one thread (torch and OpenCV), it measures samples per second
of what a DataLoader worker does — `ReidDataset[i]` with the train transform (decode, resize to the random
crop's source size for --height x --width) then `default_collate` per batch of --batch — for the inputs of
every model (reid.modeling.MODEL_INPUTS: crop, + DSAP, + texture), beside the floor: the same inputs only
decoded (crop JPEG, DSAP and texture bytes), no resize, no tensor. The samples are uint8; the column
"+batch work on CPU" adds what the engine does to the batch on its device (`model_inputs`, then
`BatchAugment`: crop, flip, erasing), here on this CPU, where a GPU run does it on the GPU. Candidates
interleaved round by round, best of --rounds. The last line: ``loader: min over models N samples/s/core at HxW S=S (R x floor)``.
Goal (issue 26): >= 1,000 samples/s/core for every model at 256x128, S=32, and >= 0.5x the floor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import default_collate

from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import BatchAugment, model_inputs, train_transform
from reid.dsap import dsap_schema
from reid.io import read_image, write_image, write_parquet_atomic
from reid.modeling import MODEL_INPUTS, MODEL_NAMES
from reid.parts import N_PARTS, atlas_shape
from reid.sanpg.cache import texture_schema

CROP = (128, 64)


def person_like(rng: np.random.Generator, shape: tuple[int, ...], grain: int = 12) -> np.ndarray:
    """Smooth colour fields with some grain (crops: JPEG sizes like those of real crops, not of noise;
    grain 0 for pseudo textures, which SAN-PG's decoder paints smooth)."""
    small = rng.integers(0, 256, (shape[0] // 8, shape[1] // 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(image.astype(np.int16) + rng.integers(-grain, grain + 1, image.shape), 0, 255).astype(np.uint8)


def build_inputs(folder: Path, n: int, grid: int, tile: int, seed: int = 0) -> tuple[pa.Table, Path, Path]:
    """(manifest-like table with path + label, DSAP cache, texture cache) of `n` crops under `folder`."""
    rng = np.random.default_rng(seed)
    ids, paths = [f"train/{k:05d}" for k in range(n)], []
    for k in range(n):
        path = folder / "crops" / f"{k:05d}.jpg"
        write_image(path, person_like(rng, CROP))
        paths.append(str(path))
    dsaps = [person_like(rng, (N_PARTS * grid, grid)).tobytes() for _ in range(n)]
    schema = dsap_schema(grid, "mean")
    write_parquet_atomic(folder / "dsap.parquet", pa.table({
        "image_id": pa.array(ids), "dsap": pa.array(dsaps, schema.field("dsap").type),
        "coverage": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * N_PARTS, np.float32)), N_PARTS),
        "found": pa.array([True] * n)}, schema=schema))
    atlases = [person_like(rng, atlas_shape(tile), grain=0).tobytes() for _ in range(n)]
    schema = texture_schema(tile)
    write_parquet_atomic(folder / "texture.parquet", pa.table({
        "image_id": pa.array(ids), "texture": pa.array(atlases, schema.field("texture").type)}, schema=schema))
    table = pa.table({"image_id": pa.array(ids), "path": pa.array(paths), "label": pa.array(np.arange(n) % 50)})
    return table, folder / "dsap.parquet", folder / "texture.parquet"


def floor_item(dataset: ReidDataset, inputs: tuple[str, ...]) -> Callable[[int], object]:
    """Decode only: the crop JPEG, the DSAP and texture bytes of the item (as arrays)."""
    def item(i: int) -> object:
        out = [read_image(dataset.paths[i])]
        if "dsap" in inputs:
            out.append(dataset.dsap[i].copy())
        if "texture" in inputs:
            out.append(dataset.texture[i].copy())
        return out
    return item


def worker_batches(dataset: ReidDataset, batch: int, augment: BatchAugment | None = None) -> Callable[[int], object]:
    """What a DataLoader worker does for the batch starting at item i: the items, collated (then, with
    `augment`, what the engine does to the batch on its device, here the CPU: floats, crop, flip, erasing)."""
    def run(i: int) -> object:
        collated = default_collate([dataset[k] for k in range(i, min(i + batch, len(dataset)))])
        if augment is None:
            return collated
        floats = model_inputs(collated)
        return {**floats, "image": augment(floats["image"])}
    return run


def each_item(fn: Callable[[int], object], batch: int) -> Callable[[int], object]:
    def run(i: int) -> object:
        return [fn(k) for k in range(i, i + batch)]
    return run


def samples_per_s(fns: dict[str, Callable[[int], object]], n: int, batch: int, rounds: int) -> dict[str, float]:
    """Samples/s of each fn(i) over the batches i = 0, batch, 2 batch, ... < n."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                fn(i)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n / t for name, t in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="samples per timed pass")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--grid", type=int, default=32, help="DSAP side S")
    parser.add_argument("--tile", type=int, default=32, help="texture atlas tile T")
    parser.add_argument("--batch", type=int, default=64, help="samples per collated batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.n % args.batch:
        parser.error("--n must be a multiple of --batch")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    size = (args.height, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        table, dsap, texture = build_inputs(Path(tmp), args.n, args.grid, args.tile)
        transform = train_transform(size)
        fns = {}
        for model in MODEL_NAMES:
            inputs = MODEL_INPUTS[model]
            dataset = ReidDataset(table, transform, dsap_path=dsap if "dsap" in inputs else None,
                                  texture_path=texture if "texture" in inputs else None)
            fns[model] = worker_batches(dataset, args.batch)
            fns[f"floats {model}"] = worker_batches(dataset, args.batch, BatchAugment(size))
            fns[f"floor {model}"] = each_item(floor_item(dataset, inputs), args.batch)
        rates = samples_per_s(fns, args.n, args.batch, args.rounds)
    print(f"one thread, {args.n} samples in batches of {args.batch}, best of {args.rounds}; crops {CROP[0]}x{CROP[1]} "
          f"JPEG -> {size[0]}x{size[1]}, DSAP S={args.grid}, texture T={args.tile}")
    print(f"{'model':<12}{'inputs':<16}{'samples/s':>11}{'floor/s':>11}{'x floor':>9}{'+batch work on CPU':>20}")
    for model in MODEL_NAMES:
        rate, floor = rates[model], rates[f"floor {model}"]
        print(f"{model:<12}{'+'.join(('crop', *MODEL_INPUTS[model])):<16}{rate:>11.0f}{floor:>11.0f}{rate / floor:>9.2f}"
              f"{rates[f'floats {model}']:>20.0f}")
    worst = min(MODEL_NAMES, key=lambda m: rates[m])
    print(f"loader: min over models {rates[worst]:.0f} samples/s/core at {size[0]}x{size[1]} S={args.grid} "
          f"({rates[worst] / rates[f'floor {worst}']:.2f} x floor)")


if __name__ == "__main__":
    main()
