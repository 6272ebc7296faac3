"""Training-loader throughput per core: each model's inputs with augmentation, beside a decode-only floor.

Run: .venv/bin/python bench/bench_loader.py [--n 256] [--height 256] [--width 128] [--grid 32] [--tile 32]

Builds in a temporary folder N person-like 128x64 JPEG crops (the synthetic world's size), a DSAP cache
at S = --grid and a pseudo-texture cache (PNG atlases 6T x 4T, T = --tile) as the dsap and texture stages
write them. Then, in this process on one thread (torch and OpenCV), it measures samples per second of
`ReidDataset[i]` with the train transform at --height x --width for the inputs of every model
(reid.modeling.MODEL_INPUTS: crop, + DSAP, + texture), and of the floor: the same inputs only decoded
(crop JPEG, DSAP bytes, texture PNG), no augmentation, no tensor conversion. Candidates interleaved round
by round, best of --rounds. The last line: ``loader: min over models N samples/s/core at HxW S=S (R x floor)``.
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

from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import train_transform
from reid.dsap import dsap_schema
from reid.io import decode_png, encode_png, read_image, write_image, write_parquet_atomic
from reid.modeling import MODEL_INPUTS, MODEL_NAMES
from reid.parts import N_PARTS, atlas_shape

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
    atlases = [encode_png(person_like(rng, atlas_shape(tile), grain=0)) for _ in range(n)]
    write_parquet_atomic(folder / "texture.parquet", pa.table({"image_id": pa.array(ids), "texture": pa.array(atlases, pa.binary())}),
                         {"tile": str(tile)})
    table = pa.table({"image_id": pa.array(ids), "path": pa.array(paths), "label": pa.array(np.arange(n) % 50)})
    return table, folder / "dsap.parquet", folder / "texture.parquet"


def floor_item(dataset: ReidDataset, inputs: tuple[str, ...], grid: int) -> Callable[[int], object]:
    """Decode only: the crop JPEG, the DSAP bytes (as an array), the texture PNG."""
    def item(i: int) -> object:
        out = [read_image(dataset.paths[i])]
        if "dsap" in inputs:
            out.append(np.frombuffer(dataset.dsap[i].as_py(), np.uint8).reshape(N_PARTS, grid, grid, 3))
        if "texture" in inputs:
            out.append(decode_png(dataset.texture[i].as_py()))
        return out
    return item


def samples_per_s(fns: dict[str, Callable[[int], object]], n: int, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for i in range(n):
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
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    size = (args.height, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        table, dsap, texture = build_inputs(Path(tmp), args.n, args.grid, args.tile)
        transform = train_transform(size)
        fns, floors = {}, {}
        for model in MODEL_NAMES:
            inputs = MODEL_INPUTS[model]
            dataset = ReidDataset(table, transform, dsap_path=dsap if "dsap" in inputs else None,
                                  texture_path=texture if "texture" in inputs else None)
            fns[model] = dataset.__getitem__
            floors[model] = floor_item(dataset, inputs, args.grid)
        rates = samples_per_s({**fns, **{f"floor {m}": f for m, f in floors.items()}}, args.n, args.rounds)
    print(f"one thread, {args.n} samples, best of {args.rounds}; crops {CROP[0]}x{CROP[1]} JPEG -> "
          f"{size[0]}x{size[1]}, DSAP S={args.grid}, texture T={args.tile}")
    print(f"{'model':<12}{'inputs':<16}{'samples/s':>11}{'floor/s':>11}{'x floor':>9}")
    for model in MODEL_NAMES:
        rate, floor = rates[model], rates[f"floor {model}"]
        print(f"{model:<12}{'+'.join(('crop', *MODEL_INPUTS[model])):<16}{rate:>11.0f}{floor:>11.0f}{rate / floor:>9.2f}")
    worst = min(MODEL_NAMES, key=lambda m: rates[m])
    print(f"loader: min over models {rates[worst]:.0f} samples/s/core at {size[0]}x{size[1]} S={args.grid} "
          f"({rates[worst] / rates[f'floor {worst}']:.2f} x floor)")


if __name__ == "__main__":
    main()
