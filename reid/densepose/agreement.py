"""How an IUV estimator agrees with an independent human-body reference on crops without IUV ground truth.

The reference (mediapipe's person mask and BlazePose's 33 keypoints, written by
`scripts/mediapipe_reference.py` in its own environment) is imperfect, but it is a real human-body
model, so it measures the lite DensePose on real people where nothing else can:
- **mask IoU**: the estimator's body (part > 0) against the reference person mask;
- **keypoint on-body rate**: the share of visible keypoints that fall on a predicted body pixel;
- **keypoint part agreement**: the share of visible keypoints (and of those on a body pixel) whose
  predicted part belongs to one of the body groups the keypoint can lie on (a knee on an upper or lower
  leg, a wrist on a lower arm or hand...). Groups are side-agnostic (reid.parts.PART_GROUPS): left/right
  and front/back confusions are not counted, a hand labelled torso is.
A keypoint counts as on a part when any pixel within `radius` of it carries the part: keypoints sit on
joints, at the border between two parts, and a crop's labels are 1-2 pixels coarse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from reid.io import decode_raw, read_image
from reid.parts import GROUP_NAMES, N_CLASSES, PART_GROUPS

N_LANDMARKS = 33
MIN_VISIBILITY = 0.5


def _groups(*names: str) -> tuple[str, ...]:
    unknown = set(names) - set(GROUP_NAMES)
    if unknown:
        raise ValueError(f"unknown part groups {sorted(unknown)}")
    return names


# BlazePose landmark index -> the body groups it can lie on (its topology: 0-10 face, 11-12 shoulders,
# 13-14 elbows, 15-16 wrists, 17-22 finger tips, 23-24 hips, 25-26 knees, 27-28 ankles, 29-32 heels/toes).
LANDMARK_GROUPS: tuple[tuple[str, ...], ...] = (
    (_groups("head"),) * 11
    + (_groups("torso", "upper_arms"),) * 2
    + (_groups("upper_arms", "lower_arms"),) * 2
    + (_groups("lower_arms", "hands"),) * 2
    + (_groups("hands", "lower_arms"),) * 6
    + (_groups("torso", "upper_legs"),) * 2
    + (_groups("upper_legs", "lower_legs"),) * 2
    + (_groups("lower_legs", "feet"),) * 2
    + (_groups("feet", "lower_legs"),) * 4
)
assert len(LANDMARK_GROUPS) == N_LANDMARKS


def allowed_parts_table() -> np.ndarray:
    """bool [33, 25]: whether a landmark may lie on each part index (background never)."""
    table = np.zeros((N_LANDMARKS, N_CLASSES), bool)
    parts_of = dict(zip(GROUP_NAMES, PART_GROUPS, strict=True))
    for i, groups in enumerate(LANDMARK_GROUPS):
        for group in groups:
            table[i, list(parts_of[group])] = True
    return table


ALLOWED_PARTS = allowed_parts_table()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one size; 1 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"mask sizes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def parts_near(parts: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    """The part indices within `radius` pixels (a square window) of (x, y), clipped to the crop."""
    h, w = parts.shape
    col, row = int(round(x)), int(round(y))
    window = parts[max(0, row - radius):min(h, row + radius + 1), max(0, col - radius):min(w, col + radius + 1)]
    return np.unique(window)


def keypoint_counts(parts: np.ndarray, landmarks: np.ndarray, radius: int = 1) -> tuple[int, int, int]:
    """(visible keypoints inside the crop, of them on a body pixel, of them on an allowed part) for one crop.

    `parts`: int [H, W] (0 background); `landmarks`: [33, 3] (x, y in crop pixels, visibility), NaN
    when the reference found no pose (then (0, 0, 0)).
    """
    if landmarks.shape != (N_LANDMARKS, 3):
        raise ValueError(f"landmarks must be [{N_LANDMARKS}, 3], got {list(landmarks.shape)}")
    h, w = parts.shape
    visible = on_body = agree = 0
    for i, (x, y, visibility) in enumerate(landmarks):
        if not (visibility >= MIN_VISIBILITY and 0 <= x < w and 0 <= y < h):  # NaN fails too
            continue
        near = parts_near(parts, x, y, radius)
        visible += 1
        on_body += bool((near > 0).any())
        agree += bool(ALLOWED_PARTS[i, near].any())
    return visible, on_body, agree


@dataclass
class BodyAgreement:
    """Accumulates mask IoU and keypoint counts over crops; `summary()` gives the means."""

    radius: int = 1
    ious: list[float] = field(default_factory=list)
    body_share: list[float] = field(default_factory=list)
    reference_share: list[float] = field(default_factory=list)
    posed: int = 0
    visible: int = 0
    on_body: int = 0
    agree: int = 0

    def update(self, parts: np.ndarray, reference_mask: np.ndarray, landmarks: np.ndarray) -> None:
        body = parts > 0
        self.ious.append(mask_iou(body, reference_mask))
        self.body_share.append(float(body.mean()))
        self.reference_share.append(float(reference_mask.mean()))
        self.posed += bool(not np.isnan(landmarks).all())
        visible, on_body, agree = keypoint_counts(parts, landmarks, self.radius)
        self.visible += visible
        self.on_body += on_body
        self.agree += agree

    def summary(self) -> dict[str, float | int]:
        n = len(self.ious)
        if n == 0:
            raise ValueError("no crops were scored")
        return {
            "n_crops": n,
            "mask_iou": float(np.mean(self.ious)),
            "body_share": float(np.mean(self.body_share)),
            "reference_body_share": float(np.mean(self.reference_share)),
            "pose_found": self.posed / n,
            "n_keypoints": self.visible,
            "keypoint_on_body": self.on_body / self.visible if self.visible else float("nan"),
            "keypoint_part_agreement": self.agree / self.visible if self.visible else float("nan"),
            # among keypoints on a body pixel: how right the parts are where the estimator claims a body
            "keypoint_part_agreement_on_body": self.agree / self.on_body if self.on_body else float("nan"),
        }


@dataclass
class Reference:
    """One crop's reference: its manifest path, person mask (bool [H, W]) and landmarks [33, 3]."""

    path: str
    mask: np.ndarray
    landmarks: np.ndarray


def reference_crop(ref: Reference, root: str | Path) -> np.ndarray:
    """The RGB crop `ref` describes (its path relative to `root`), checked against the size of its mask."""
    path = Path(root) / ref.path
    image = read_image(path)
    if ref.mask.shape != image.shape[:2]:
        raise ValueError(f"{path}: its reference mask is {ref.mask.shape}, the crop {image.shape[:2]}")
    return image


def read_reference(path: str | Path) -> list[Reference]:
    """The rows of a reference Parquet file (scripts/mediapipe_reference.py); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference file not found: {path} (write it with scripts/mediapipe_reference.py)")
    table = pq.read_table(path)
    missing = {"path", "mask", "landmarks"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: not a body reference, columns {sorted(missing)} are missing")
    marks = table.column("landmarks").combine_chunks()
    values = marks.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if values.size != len(table) * N_LANDMARKS * 3:
        raise ValueError(f"{path}: landmarks must hold {N_LANDMARKS * 3} values a row")
    values = values.reshape(len(table), N_LANDMARKS, 3)
    out = []
    for i, (crop, png) in enumerate(zip(table.column("path").to_pylist(), table.column("mask").to_pylist(), strict=True)):
        mask = decode_raw(png)
        out.append(Reference(crop, (mask[..., 0] if mask.ndim == 3 else mask) > 127, values[i]))
    return out
