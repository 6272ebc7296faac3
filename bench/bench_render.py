"""Renderer speed and world difficulty.

1. images/s of reid.synth.render_person (numpy ray casting, unshaded) against a straightforward
   per-pixel reference renderer (Python loops over pixels and primitives, same geometry) on a small
   image, in the same run; checks both agree on the IUV.
2. Wall time of the default Market-layout world export (WorldConfig()) and the mAP of a
   colour-histogram retrieval baseline on it (Market protocol) — it must sit clearly below 1.

    .venv/bin/python bench/bench_render.py [--size 48 24] [--skip-world]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from reid.io import read_image
from reid.parts import encode_iuv
from reid.synth import View, WorldConfig, export_market, make_atlas, render_person, sample_outfit, sample_pose
from reid.synth.body import build_primitives
from reid.synth.render import _chart, _place, view_rotation


def _hit_scalar(prim, frame, origin, x, y):
    """Reference ray cast of one primitive for one ray (x, y) along -z: (z of the hit, local point) or None."""
    q0 = [frame[i][0] * (x - origin[0]) + frame[i][1] * (y - origin[1]) - frame[i][2] * origin[2] for i in range(3)]
    d = [-frame[i][2] for i in range(3)]
    if prim.kind == "ellipsoid":
        radii = (prim.sx, prim.sy, prim.length / 2)
        p = [q0[i] / radii[i] for i in range(3)]
        dd = [d[i] / radii[i] for i in range(3)]
        a, b = sum(t * t for t in dd), 2 * sum(p[i] * dd[i] for i in range(3))
        c = sum(t * t for t in p) - 1
        disc = b * b - 4 * a * c
        if disc < 0:
            return None
        t = (-b - math.sqrt(disc)) / (2 * a)
        return -t, [q0[i] + t * d[i] for i in range(3)]
    # Cone: march along the ray and bisect the first entry (no clever algebra: a reference).
    k = (prim.r1 - prim.r0) / prim.length
    scale = (prim.sx, prim.sy, 1.0)

    def inside(t):
        q = [(q0[i] + t * d[i]) / scale[i] for i in range(3)]
        r = prim.r0 + k * q[2]
        return 0 <= q[2] <= prim.length and q[0] ** 2 + q[1] ** 2 <= r * r

    steps = 400
    span = 3.0
    prev = -span
    for s in range(1, steps + 1):
        t = -span + 2 * span * s / steps
        if inside(t):
            lo, hi = prev, t
            for _ in range(30):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if inside(mid) else (mid, hi)
            return -hi, [q0[i] + hi * d[i] for i in range(3)]
        prev = t
    return None


def reference_iuv(pose, view, size):
    """Per-pixel, per-primitive Python loops; nearest hit wins."""
    h, w = size
    rot = view_rotation(view)
    prims = build_primitives(pose)
    scale, centre = _place(prims, rot, view, size)
    parts, us, vs = np.zeros(size, np.int64), np.zeros(size), np.zeros(size)
    frames = [(p, (p.frame @ rot.T).tolist(), (rot @ p.origin).tolist()) for p in prims]
    for r in range(h):
        for c in range(w):
            x = (c + 0.5 - w / 2) / scale + centre[0]
            y = centre[1] - (r + 0.5 - h / 2) / scale
            best = -math.inf
            for prim, frame, origin in frames:
                hit = _hit_scalar(prim, frame, origin, x, y)
                if hit is not None and hit[0] > best:
                    best = hit[0]
                    part, u, v = _chart(prim, np.array(hit[1])[:, None])
                    parts[r, c], us[r, c], vs[r, c] = part[0], u[0], v[0]
    return encode_iuv(parts, us, vs)


def hist_features(paths):
    feats = []
    for path in paths:
        hsv = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        feats.append(hist / hist.sum())
    return np.stack(feats)


def market_map(q_feat, q_pid, q_cam, g_feat, g_pid, g_cam) -> float:
    """mAP with L1 distance; drop same pid + same cam and junk (-1) from each query's gallery."""
    aps = []
    for f, pid, cam in zip(q_feat, q_pid, q_cam, strict=True):
        keep = (g_pid != -1) & ~((g_pid == pid) & (g_cam == cam))
        dist = np.abs(g_feat[keep] - f).sum(1)
        match = (g_pid[keep] == pid)[np.argsort(dist, kind="stable")]
        if not match.any():
            continue
        hits = np.flatnonzero(match)
        aps.append(((np.arange(len(hits)) + 1) / (hits + 1)).mean())
    return float(np.mean(aps))


def parse(paths):
    names = [p.name.split("_") for p in paths]
    return np.array([int(n[0]) for n in names]), np.array([int(n[1][1]) for n in names])


def histogram_baseline_map(root: Path) -> float:
    query, gallery = sorted((root / "query").glob("*.jpg")), sorted((root / "bounding_box_test").glob("*.jpg"))
    return market_map(hist_features(query), *parse(query), hist_features(gallery), *parse(gallery))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(48, 24))
    ap.add_argument("--skip-world", action="store_true")
    args = ap.parse_args()
    size = tuple(args.size)
    rng = np.random.default_rng(0)
    atlas = make_atlas(sample_outfit(rng), 32, rng)
    pose, view = sample_pose(rng), View(azimuth=35.0, elevation=12.0)

    t0 = time.perf_counter()
    ref = reference_iuv(pose, view, size)
    t_ref = time.perf_counter() - t0
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        _, iuv = render_person(atlas, pose=pose, view=view, size=size, shading=False)
    t_vec = (time.perf_counter() - t0) / n
    agree = (ref[..., 0] == iuv[..., 0]).mean()
    print(f"render {size[0]}x{size[1]} unshaded: numpy {1 / t_vec:.1f} img/s, per-pixel reference {1 / t_ref:.2f} img/s, "
          f"speed-up x{t_ref / t_vec:.0f}; part labels agree on {agree:.1%} of pixels")
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        render_person(atlas, pose=pose, view=view, size=(128, 64), shading=True)
    print(f"render 128x64 shaded (3x3 supersampled): {n / (time.perf_counter() - t0):.1f} img/s")

    if not args.skip_world:
        cfg = WorldConfig()
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            counts = export_market(Path(tmp) / "market", cfg, progress=False)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f"default world export: {sum(counts.values())} crops {counts} in {dt:.1f} s wall, {dc:.1f} s CPU")
            print(f"colour-histogram baseline (HSV 16x4x4, L1) on the default world: "
                  f"mAP {histogram_baseline_map(Path(tmp) / 'market'):.3f}")


if __name__ == "__main__":
    main()
