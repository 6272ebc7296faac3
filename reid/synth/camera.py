"""Cameras of the synthetic world: viewpoint distribution, imaging defects, detection boxes, clutter.

A camera watches people walk past: each track's heading is the camera's azimuth or its opposite
(people walk both ways) plus spread, so one camera sees fronts and backs. Imaging: colour cast,
lower resolution, blur and noise are applied to RGB only; the ground-truth IUV stays exact
(occluders do blank it, since they hide the body).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reid.synth.body import Pose
from reid.synth.render import View, render_person
from reid.synth.texture import PALETTE


@dataclass(frozen=True)
class Camera:
    azimuth: float  # mean heading of the people it sees (degrees; 0 = facing the camera)
    spread: float  # std of the heading around it
    elevation: float
    cast: tuple[float, float, float]  # per-channel RGB gains
    blur: float  # Gaussian sigma in pixels (0 = sharp)
    noise: float  # Gaussian noise std in grey levels
    resolution: float  # fraction of the crop resolution the sensor really delivers


@dataclass(frozen=True)
class CameraDomain:
    """The distribution a world's cameras are drawn from. The defaults are the reID world's (and its
    pool's); a cross-dataset target world shifts them (params ``synthesize.target.domain``)."""

    elevation: tuple[float, float] = (5.0, 30.0)  # degrees, looking down
    cast: tuple[float, float] = (0.88, 1.12)  # range of the per-channel RGB gains
    brightness: float = 1.0  # scene lighting: one gain on every camera's cast
    blur: tuple[float, ...] = (0.0, 0.5, 0.9)  # Gaussian sigmas a camera picks from
    noise: tuple[float, float] = (2.0, 7.0)  # grey levels
    resolution: tuple[float, float] = (0.5, 1.0)  # fraction of the crop resolution delivered

    def validate(self) -> None:
        ranges = {"elevation": self.elevation, "cast": self.cast, "noise": self.noise, "resolution": self.resolution}
        for name, (lo, hi) in ranges.items():
            if lo > hi:
                raise ValueError(f"{name} must be a [min, max] range, got {[lo, hi]}")
        checks = [
            (-10 <= self.elevation[0] and self.elevation[1] <= 80, "elevation must lie in [-10, 80] degrees"),
            (self.cast[0] > 0 and self.brightness > 0, "cast and brightness must be > 0"),
            (bool(self.blur) and min(self.blur) >= 0, "blur must list at least one sigma >= 0"),
            (self.noise[0] >= 0, "noise must be >= 0"),
            (0.1 <= self.resolution[0] and self.resolution[1] <= 1, "resolution must lie in [0.1, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def sample_cameras(n: int, rng: np.random.Generator, domain: CameraDomain = CameraDomain()) -> list[Camera]:
    """`n` cameras with spread-out mean headings and different imaging defects, drawn from `domain`.

    The default domain draws exactly what this function drew before it had one (same calls, same
    bounds), so the reID world's bytes do not depend on it.
    """
    base = rng.uniform(0, 360)
    return [
        Camera(
            azimuth=float((base + i * 360.0 / n * 0.5 + rng.normal(0, 10)) % 360),
            spread=float(rng.uniform(15, 35)),
            elevation=float(rng.uniform(*domain.elevation)),
            cast=tuple(float(g) * domain.brightness for g in rng.uniform(*domain.cast, 3)),
            blur=float(rng.choice(domain.blur)),
            noise=float(rng.uniform(*domain.noise)),
            resolution=float(rng.uniform(*domain.resolution)),
        )
        for i in range(n)
    ]


def clutter(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A cluttered street-like background from the shared palette (muted): walls, floor, objects."""
    h, w = size
    muted = lambda c: 0.45 * PALETTE[c] + 0.55 * 128.0
    img = np.empty((h, w, 3), np.float32)
    img[:] = muted(rng.integers(len(PALETTE)))
    floor = int(h * rng.uniform(0.6, 0.85))
    img[floor:] = muted(rng.integers(len(PALETTE))) * 0.85
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 8, w)), y0 + int(rng.integers(h // 10, h // 2))
        cv2.rectangle(img, (x0, y0), (x1, y1), muted(rng.integers(len(PALETTE))).tolist(), -1)
    img += rng.normal(0, 6, (h, w, 1))
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def occlude(rgb: np.ndarray, iuv: np.ndarray, rng: np.random.Generator) -> None:
    """Draw an occluder (a bench or car from below, a pole or passer-by from the side) in place."""
    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        top = int(h * rng.uniform(0.55, 0.8))
        mask[top:] = 1
    else:
        width = int(w * rng.uniform(0.2, 0.45))
        x0 = 0 if rng.random() < 0.5 else w - width
        mask[int(h * rng.uniform(0, 0.3)):, x0:x0 + width] = 1
    colour = 0.7 * PALETTE[rng.integers(len(PALETTE))] + 0.3 * 128
    patch = colour + rng.normal(0, 8, (h, w, 1))
    m = mask.astype(bool)
    rgb[m] = np.clip(patch[m], 0, 255).astype(np.uint8)
    iuv[m] = 0


def apply_camera(rgb: np.ndarray, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Imaging defects on an RGB crop: low resolution, blur, colour cast, sensor noise."""
    h, w = rgb.shape[:2]
    img = rgb.astype(np.float32)
    if cam.resolution < 0.999:
        small = cv2.resize(img, (max(4, round(w * cam.resolution)), max(8, round(h * cam.resolution))),
                           interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if cam.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), cam.blur)
    img = img * np.array(cam.cast, np.float32) * rng.uniform(0.9, 1.1)
    img += rng.normal(0, cam.noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def detection_view(azimuth: float, cam: Camera, rng: np.random.Generator, cut_off: float) -> View:
    """The view a detector's box gives: jittered scale and position; with probability `cut_off` the box
    cuts off limbs (too tight or shifted)."""
    fill, dx, dy = rng.uniform(0.8, 0.95), rng.normal(0, 0.05), rng.normal(0, 0.03)
    if rng.random() < cut_off:
        fill, dy = rng.uniform(1.0, 1.25), rng.choice([-1, 1]) * rng.uniform(0.08, 0.2)
    return View(azimuth=float(azimuth), elevation=float(cam.elevation + rng.normal(0, 3)), fill=float(fill),
                dx=float(dx), dy=float(dy))


def capture(atlas: np.ndarray, pose: Pose, view: View, cam: Camera, size: tuple[int, int],
            rng: np.random.Generator, occlusion: float) -> tuple[np.ndarray, np.ndarray]:
    """One camera crop of a person: (rgb, ground-truth iuv)."""
    rgb, iuv = render_person(atlas, pose=pose, view=view, size=size, background=clutter(size, rng))
    if rng.random() < occlusion:
        occlude(rgb, iuv, rng)
    return apply_camera(rgb, cam, rng), iuv
