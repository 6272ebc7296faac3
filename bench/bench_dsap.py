"""DSAP warp throughput and where the densepose/dsap stages spend their time.

Run: .venv/bin/python bench/bench_dsap.py [--n 512] [--batch 64] [--size 12]

Prints images/s for reid.dsap.warp (mean policy + per-part coverage), a straightforward NumPy
fancy-index version (uint8, last-write collisions, no coverage) and the per-pixel loop on a few
images, all on the same synthetic 128x64 crops at S = --size (default 12, the default profile's;
the papers use 32), and ratios against the straightforward
version. Then per-image times of the stage steps: IUV PNG file read (oracle / precomputed),
IUV PNG encode and decode (iuv.parquet), crop JPEG read, warp, DSAP Parquet write.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from reid.densepose.precomputed import read_iuv_png
from reid.dsap import warp_with_coverage
from reid.io import decode_raw, encode_raw, read_image, write_parquet_atomic
from reid.parts import N_PARTS, decode_iuv, dsap_cell, encode_iuv

H, W = 128, 64


def person_like_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crops with a person-shaped foreground (~45 % of pixels) of smooth part/UV fields."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    body = (np.abs(xx - 0.5) < 0.25 + 0.05 * np.sin(8 * yy)) & (yy > 0.05) & (yy < 0.97)
    parts = np.clip((yy * 12).astype(int) * 2 + (xx > 0.5) + 1, 1, N_PARTS) * body
    iuvs = np.empty((n, H, W, 3), np.uint8)
    for k in range(n):
        shift = rng.random(2)
        iuvs[k] = encode_iuv(parts, (yy * 12 + shift[0]) % 1.0, (xx * 2 + shift[1]) % 1.0)
    return images, iuvs


def straightforward_warp(images: np.ndarray, iuvs: np.ndarray, size: int) -> np.ndarray:
    """The obvious NumPy version: float decode, fancy-index assignment (last write wins in practice)."""
    b = images.shape[0]
    out = np.empty((b, N_PARTS, size, size, 3), np.uint8)
    out[:] = np.rint(images.reshape(b, -1, 3).mean(axis=1)).astype(np.uint8)[:, None, None, None]
    parts, u, v = decode_iuv(iuvs)
    bi, yi, xi = np.nonzero(parts)
    rows, cols = dsap_cell(u[bi, yi, xi], v[bi, yi, xi], size)
    out[bi, parts[bi, yi, xi] - 1, rows, cols] = images[bi, yi, xi]
    return out


def loop_warp(images: np.ndarray, iuvs: np.ndarray, size: int) -> np.ndarray:
    b, h, w, _ = images.shape
    out = np.empty((b, N_PARTS, size, size, 3), np.uint8)
    for k in range(b):
        out[k] = np.rint(images[k].reshape(-1, 3).mean(axis=0)).astype(np.uint8)
        for y in range(h):
            for x in range(w):
                p = iuvs[k, y, x, 0]
                if p:
                    r = min(int(iuvs[k, y, x, 1] / 255 * size), size - 1)
                    c = min(int(iuvs[k, y, x, 2] / 255 * size), size - 1)
                    out[k, p - 1, r, c] = images[k, y, x]
    return out


def rates(fns: dict[str, callable], n_images: int, rounds: int = 5) -> dict[str, float]:
    """Best-of-`rounds` images per second of each function, the candidates interleaved round by
    round so that load from other processes on a shared machine hits them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n_images / t for name, t in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512, help="crops per timing")
    ap.add_argument("--batch", type=int, default=64, help="warp batch size")
    ap.add_argument("--size", type=int, default=12, help="DSAP size S (default profile: 12; papers: 32)")
    args = ap.parse_args()
    S = args.size
    images, iuvs = person_like_inputs(args.n)
    fg = (iuvs[..., 0] > 0).mean()
    print(f"{args.n} crops {H}x{W}, {fg:.0%} foreground, S={S}, batch {args.batch}")

    def batched(fn):
        return lambda: [fn(images[i:i + args.batch], iuvs[i:i + args.batch]) for i in range(0, args.n, args.batch)]

    r = rates({
        "mean": batched(lambda a, b: warp_with_coverage(a, b, S, "mean")),
        "last": batched(lambda a, b: warp_with_coverage(a, b, S, "last")),
        "plain": batched(lambda a, b: straightforward_warp(a, b, S)),
    }, args.n)
    r_warp, r_last, r_plain = r["mean"], r["last"], r["plain"]
    n_loop = 4
    r_loop = rates({"loop": lambda: loop_warp(images[:n_loop], iuvs[:n_loop], S)}, n_loop, rounds=1)["loop"]
    print(f"warp mean+coverage     {r_warp:9.0f} img/s  x{r_warp / r_plain:5.2f} vs straightforward")
    print(f"warp last+coverage     {r_last:9.0f} img/s  x{r_last / r_plain:5.2f} vs straightforward")
    print(f"straightforward numpy  {r_plain:9.0f} img/s  x 1.00")
    print(f"per-pixel loop         {r_loop:9.0f} img/s  x{r_loop / r_plain:5.3f} vs straightforward ({n_loop} images)")

    # Stage steps, per image.
    n = min(args.n, 256)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(n):
            p = Path(tmp) / f"{k:05d}.jpg"
            cv2.imwrite(str(p), images[k][..., ::-1])
            paths.append(p)
        pngs = [encode_raw(iuvs[k]) for k in range(n)]
        gt_paths = []
        for k in range(n):
            gt_paths.append(Path(tmp) / f"{k:05d}.png")
            gt_paths[-1].write_bytes(pngs[k])
        steps = {
            "IUV PNG file read (oracle/precomp.)": lambda: [read_iuv_png(p, (H, W)) for p in gt_paths],
            "IUV PNG encode (densepose)": lambda: [encode_raw(iuvs[k]) for k in range(n)],
            "IUV PNG decode (densepose/dsap)": lambda: [decode_raw(b) for b in pngs],
            "crop JPEG read (dsap)": lambda: [read_image(p) for p in paths],
            "warp mean+coverage (dsap)": lambda: [warp_with_coverage(images[i:i + args.batch], iuvs[i:i + args.batch], S)
                                                  for i in range(0, n, args.batch)],
        }
        dsaps, cover = warp_with_coverage(images[:n], iuvs[:n], S)
        table = pa.table({
            "image_id": pa.array(np.arange(n, dtype=np.int64)),
            "dsap": pa.array([d.tobytes() for d in dsaps], type=pa.binary(N_PARTS * S * S * 3)),
            "coverage": pa.FixedSizeListArray.from_arrays(pa.array(cover.reshape(-1)), N_PARTS),
        })
        steps["DSAP Parquet write (dsap)"] = lambda: write_parquet_atomic(Path(tmp) / "dsap.parquet", table)
        print(f"stage steps, ms per image over {n} crops:")
        for name, r in rates(steps, n, rounds=3).items():
            print(f"  {name:36s} {1000 / r:7.3f}")


if __name__ == "__main__":
    main()
