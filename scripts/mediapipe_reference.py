"""An independent human-body reference for real crops: mediapipe's person mask and BlazePose keypoints.

Runs in its own environment (`make mediapipe-env`: mediapipe 0.10.14 + pyarrow in `.venv-mediapipe`),
never in the project's: mediapipe's wheel brings opencv-contrib, which would shadow the project's
OpenCV. It imports nothing from `reid`; `scripts/body_agreement.py` (project environment) scores an
IUV estimator against what this writes.

    .venv-mediapipe/bin/python scripts/mediapipe_reference.py --manifest <root>/manifest.csv \
        --split train --limit 1000 --out /tmp/reference_train.parquet

Input: a custom manifest (SPEC: `path,pid,camid,split`, paths relative to the manifest's folder).
Output, one row per crop (written to a temp file, then renamed):
- `path`: the manifest's `path`;
- `mask`: selfie segmentation (model 0) probability > 0.5 at the crop's size, PNG bytes (0 / 255);
- `landmarks`: BlazePose's 33 keypoints as 99 floats (x, y in crop pixels, visibility), NaN where no
  pose was found. BlazePose runs on the crop letterboxed to a square and upscaled 2x (on 128 x 64
  crops unscaled it finds fewer people).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N_LANDMARKS = 33
POSE_UPSCALE = 2


def manifest_paths(manifest: Path, splits: set[str], limit: int, seed: int) -> list[str]:
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "split"} <= set(rows[0]):
        sys.exit(f"{manifest}: expected a custom manifest with columns path,pid,camid,split")
    paths = sorted(row["path"] for row in rows if row["split"] in splits)
    if not paths:
        sys.exit(f"{manifest}: no rows with split in {sorted(splits)}")
    if limit and limit < len(paths):
        paths = sorted(random.Random(seed).sample(paths, limit))
    return paths


def letterboxed(rgb: np.ndarray, scale: int) -> tuple[np.ndarray, int, int]:
    """(the crop centred on a black square canvas, upscaled; x offset; canvas side before scaling)."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    x0, y0 = (side - w) // 2, (side - h) // 2
    canvas[y0:y0 + h, x0:x0 + w] = rgb
    return cv2.resize(canvas, (side * scale, side * scale), interpolation=cv2.INTER_LINEAR), x0, y0


def pose_landmarks(pose, rgb: np.ndarray) -> np.ndarray:
    """[33, 3] (x, y in crop pixels, visibility); NaN where no pose is found."""
    canvas, x0, y0 = letterboxed(rgb, POSE_UPSCALE)
    found = pose.process(canvas).pose_landmarks
    out = np.full((N_LANDMARKS, 3), np.nan, np.float32)
    if found:
        side = canvas.shape[0] / POSE_UPSCALE
        for i, mark in enumerate(found.landmark):
            out[i] = (mark.x * side - x0, mark.y * side - y0, mark.visibility)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="query,gallery", help="comma-separated manifest splits")
    parser.add_argument("--limit", type=int, default=0, help="a seeded random subset of this many crops; 0: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    paths = manifest_paths(args.manifest, set(args.split.split(",")), args.limit, args.seed)
    segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
    masks, landmarks = [], []
    for i, rel in enumerate(paths):
        file = args.manifest.parent / rel
        bgr = cv2.imread(str(file))
        if bgr is None:
            sys.exit(f"unreadable image: {file}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        mask = (segmenter.process(rgb).segmentation_mask > 0.5).astype(np.uint8) * 255
        masks.append(cv2.imencode(".png", mask)[1].tobytes())
        landmarks.append(pose_landmarks(pose, rgb).ravel())
        if (i + 1) % 200 == 0:
            print(f"{i + 1}/{len(paths)} crops", file=sys.stderr)

    table = pa.table({
        "path": pa.array(paths, pa.string()),
        "mask": pa.array(masks, pa.binary()),
        "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(landmarks), pa.float32()),
                                                      N_LANDMARKS * 3),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, args.out)
    found = sum(not np.isnan(row[0]) for row in landmarks)
    print(f"{args.out}: {len(paths)} crops, a pose found in {found} ({found / len(paths):.1%})")


if __name__ == "__main__":
    main()
