"""Render a textured mannequin: orthographic ray casting of analytic primitives, vectorised in numpy.

Each primitive is intersected with the rays of the pixels inside its screen bounding box only; a
z-buffer keeps the nearest surface. IUV comes from the sample at each pixel's centre; RGB is
supersampled 3x3 (anti-aliased silhouettes and texture) when shading is on. With shading off the
pixel is exactly the atlas sample at its IUV (verification mode: no supersampling, no light).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reid.parts import atlas_pixel, encode_iuv
from reid.synth.body import Pose, Primitive, build_primitives, sample_pose

SUPERSAMPLE = 3  # odd, so the centre sub-sample is the pixel centre
LIGHT = np.array([-0.35, 0.55, 0.76]) / np.linalg.norm([-0.35, 0.55, 0.76])  # camera frame
AMBIENT = 0.45


@dataclass(frozen=True)
class View:
    """Camera relative to the person. azimuth 0 sees the front, 180 the back, 90 the person's left
    side (degrees); elevation > 0 looks down. `fill` = body height / crop height; (dx, dy) shift the
    person's centre by fractions of the crop width/height (detection jitter)."""

    azimuth: float = 0.0
    elevation: float = 0.0
    fill: float = 0.88
    dx: float = 0.0
    dy: float = 0.0


def view_rotation(view: View) -> np.ndarray:
    """[3, 3] matrix taking person-frame points to camera frame (x right, y up, z towards the camera)."""
    a, e = np.radians(view.azimuth), np.radians(view.elevation)
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    return tilt @ yaw


def _extent(prim: Primitive) -> tuple[np.ndarray, float]:
    """Two axis end points and a bounding radius (person frame)."""
    if prim.kind == "cone":
        ends = np.stack([prim.origin, prim.origin + prim.frame[2] * prim.length])
        return ends, max(prim.r0, prim.r1) * max(prim.sx, prim.sy)
    half = prim.length / 2
    ends = np.stack([prim.origin - prim.frame[2] * half, prim.origin + prim.frame[2] * half])
    return ends, max(prim.sx, prim.sy)


def _first_hit(a: np.ndarray, b: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Smallest t in [lo, hi] with a t^2 + b t + c <= 0 (NaN if none), given f(lo) > 0."""
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (b + np.where(b >= 0, sq, -sq))  # numerically stable roots q/a and c/q
        t1, t2 = q / a, c / q
    t_small, t_big = np.minimum(t1, t2), np.maximum(t1, t2)
    ok_small = (disc >= 0) & (t_small >= lo) & (t_small <= hi)
    ok_big = (disc >= 0) & (t_big >= lo) & (t_big <= hi)
    return np.where(ok_small, t_small, np.where(ok_big, t_big, np.nan))


def _cast(prim: Primitive, frame: np.ndarray, origin: np.ndarray, x: np.ndarray, y: np.ndarray):
    """Ray cast one primitive (camera-frame `frame` rows and `origin`) for rays through (x, y) along -z.

    Returns (hit mask, z of the hit, local coordinates [3, N], local normal [3, N]).
    """
    # Local point along the ray: q(t) = q0 + t * d, with t = -z (t grows away from the camera).
    q0 = frame[:, :1] * (x - origin[0]) + frame[:, 1:2] * (y - origin[1]) - frame[:, 2:3] * origin[2]
    d = -frame[:, 2]
    big = 1e3
    if prim.kind == "ellipsoid":
        radii = np.array([prim.sx, prim.sy, prim.length / 2])[:, None]
        p, dd = q0 / radii, d[:, None] / radii
        a = (dd * dd).sum(0)
        b = 2 * (p * dd).sum(0)
        c = (p * p).sum(0) - 1
        t = _first_hit(np.broadcast_to(a, b.shape), b, c, np.full_like(b, -big), np.full_like(b, big))
        hit = ~np.isnan(t)
        q = q0 + np.where(hit, t, 0.0) * d[:, None]
        normal = q / radii**2
        return hit, -t, q, normal
    scale = np.array([prim.sx, prim.sy, 1.0])[:, None]
    p, dd = q0 / scale, d[:, None] / scale
    k = (prim.r1 - prim.r0) / prim.length
    # Inside: X^2 + Y^2 <= (r0 + k Z)^2 and 0 <= Z <= L.
    rz = prim.r0 + k * p[2]
    a = dd[0] ** 2 + dd[1] ** 2 - (k * dd[2]) ** 2
    b = 2 * (p[0] * dd[0] + p[1] * dd[1] - k * dd[2] * rz)
    c = p[0] ** 2 + p[1] ** 2 - rz**2
    if abs(dd[2, 0]) < 1e-9:
        inside = (p[2] >= 0) & (p[2] <= prim.length)
        lo, hi = np.where(inside, -big, np.nan), np.where(inside, big, np.nan)
    else:
        t_a, t_b = -p[2] / dd[2], (prim.length - p[2]) / dd[2]
        lo, hi = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
    a = np.broadcast_to(a, b.shape)
    f_lo = a * lo * lo + b * lo + c
    cap = f_lo <= 0  # the ray enters through an end cap
    t = np.where(cap, lo, _first_hit(a, b, c, lo, hi))
    hit = ~np.isnan(t)
    tt = np.where(hit, t, 0.0)
    q = q0 + tt * d[:, None]
    z_loc = q[2]
    normal = np.stack([q[0] / prim.sx**2, q[1] / prim.sy**2, -k * (prim.r0 + k * z_loc)])
    cap_n = np.zeros_like(normal)
    cap_n[2] = np.where(z_loc < prim.length / 2, -1.0, 1.0)
    normal = np.where(cap, cap_n, normal)
    return hit, -t, q, normal


def _chart(prim: Primitive, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(part, u, v) of local surface points q [3, N]."""
    lat, fwd = q[0] / prim.sx, q[1] / prim.sy
    if prim.kind == "ellipsoid":
        u = (q[2] / (prim.length / 2) + 1) / 2
    else:
        u = q[2] / prim.length
    if prim.chart == "limb":
        part = np.where(fwd >= 0, prim.parts[0], prim.parts[1])
        v = np.arctan2(np.abs(fwd), lat) / np.pi
    elif prim.chart == "head":
        part = np.where(lat >= 0, prim.parts[0], prim.parts[1])
        v = np.arctan2(np.abs(lat), fwd) / np.pi
    else:
        part = np.full(q.shape[1], prim.parts[0])
        v = np.mod(np.arctan2(fwd, lat), 2 * np.pi) / (2 * np.pi)
    return part, np.clip(u, 0, 1), np.clip(v, 0, 1)


def _place(prims: list[Primitive], rot: np.ndarray, view: View, size: tuple[int, int]) -> tuple[float, np.ndarray]:
    """Pixels per metre and the camera-frame point at the crop centre, framing the whole body."""
    pts, rads = [], []
    for prim in prims:
        ends, r = _extent(prim)
        pts.append(ends @ rot.T)
        rads.append(np.full(2, r))
    pts, rads = np.concatenate(pts), np.concatenate(rads)
    top, bottom = (pts[:, 1] + rads).max(), (pts[:, 1] - rads).min()
    left, right = (pts[:, 0] - rads).min(), (pts[:, 0] + rads).max()
    h, w = size
    scale = view.fill * h / (top - bottom)
    centre = np.array([(left + right) / 2 - view.dx * w / scale, (top + bottom) / 2 + view.dy * h / scale])
    return scale, centre


def rasterize(pose: Pose, view: View, size: tuple[int, int], supersample: int = 1):
    """Per-sample buffers at `supersample` x resolution: (part int, u, v, shade) maps of [sH, sW]."""
    h, w = size
    sh, sw = h * supersample, w * supersample
    rot = view_rotation(view)
    prims = build_primitives(pose)
    scale, centre = _place(prims, rot, view, size)
    depth = np.full(sh * sw, -np.inf)
    part = np.zeros(sh * sw, dtype=np.int64)
    u = np.zeros(sh * sw)
    v = np.zeros(sh * sw)
    shade = np.ones(sh * sw)
    s = scale * supersample  # pixels (at supersampled resolution) per metre
    for prim in prims:
        ends, r = _extent(prim)
        ends_c = ends @ rot.T
        # Screen bounding box (sample indices) of the primitive.
        cols = (ends_c[:, 0] - centre[0]) * s + sw / 2
        rows = (centre[1] - ends_c[:, 1]) * s + sh / 2
        pad = r * s + 1
        c0, c1 = max(int(cols.min() - pad), 0), min(int(np.ceil(cols.max() + pad)), sw)
        r0, r1 = max(int(rows.min() - pad), 0), min(int(np.ceil(rows.max() + pad)), sh)
        if c0 >= c1 or r0 >= r1:
            continue
        rr, cc = np.mgrid[r0:r1, c0:c1]
        rr, cc = rr.ravel(), cc.ravel()
        x = (cc + 0.5 - sw / 2) / s + centre[0]
        y = centre[1] - (rr + 0.5 - sh / 2) / s
        frame_c = prim.frame @ rot.T  # rows expressed in camera coordinates
        hit, z, q, normal = _cast(prim, frame_c, rot @ prim.origin, x, y)
        idx = rr * sw + cc
        better = hit & (z > depth[idx])
        if not better.any():
            continue
        idx, q, normal = idx[better], q[:, better], normal[:, better]
        depth[idx] = z[better]
        part[idx], u[idx], v[idx] = _chart(prim, q)
        n_cam = frame_c.T @ normal
        n_cam /= np.linalg.norm(n_cam, axis=0, keepdims=True) + 1e-12
        n_cam *= np.where(n_cam[2] < 0, -1.0, 1.0)  # face the camera
        shade[idx] = AMBIENT + (1 - AMBIENT) * np.clip(LIGHT @ n_cam, 0.0, 1.0)
    shape = (sh, sw)
    return part.reshape(shape), u.reshape(shape), v.reshape(shape), shade.reshape(shape)


def render_person(
    atlas: np.ndarray,
    *,
    pose: Pose | None = None,
    view: View | None = None,
    size: tuple[int, int] = (128, 64),
    shading: bool = True,
    background: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a person wearing `atlas` (uint8 [6T, 4T, 3]) -> (rgb uint8 [H, W, 3], iuv uint8 [H, W, 3]).

    pose None: a random walking pose drawn from `seed`; view None: frontal, centred.
    background: uint8 [H, W, 3] (None: flat grey). shading=False: every foreground pixel is exactly the
    atlas sample at its IUV (no light, no supersampling).
    """
    atlas = np.asarray(atlas)
    if atlas.dtype != np.uint8 or atlas.ndim != 3 or atlas.shape[2] != 3 or atlas.shape[0] * 2 != atlas.shape[1] * 3:
        raise ValueError(f"atlas must be uint8 [6T, 4T, 3], got {atlas.dtype} {atlas.shape}")
    h, w = int(size[0]), int(size[1])
    if h < 8 or w < 4:
        raise ValueError(f"size must be at least (8, 4), got {size}")
    if background is None:
        background = np.full((h, w, 3), 127, np.uint8)
    elif background.shape != (h, w, 3):
        raise ValueError(f"background must be [H, W, 3] = {(h, w, 3)}, got {background.shape}")
    pose = pose if pose is not None else sample_pose(np.random.default_rng(seed))
    view = view if view is not None else View()
    tile = atlas.shape[1] // 4
    ss = SUPERSAMPLE if shading else 1
    part, u, v, shade = rasterize(pose, view, (h, w), ss)
    iuv_ss = encode_iuv(part, u, v)
    iuv = np.ascontiguousarray(iuv_ss[ss // 2::ss, ss // 2::ss])
    # Look the texture up with the quantised (u, v) the IUV stores, so RGB and IUV agree exactly.
    fg = part > 0
    colour = np.zeros(part.shape + (3,), np.float32)
    rows, cols = atlas_pixel(part[fg], iuv_ss[..., 1][fg] / 255.0, iuv_ss[..., 2][fg] / 255.0, tile)
    colour[fg] = atlas[rows, cols]
    if shading:
        colour *= shade[..., None]
    # Area-average the sub-samples, then composite over the background by coverage.
    colour = colour.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    cover = fg.reshape(h, ss, w, ss).mean(axis=(1, 3))[..., None]
    rgb = colour + (1 - cover) * background.astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), iuv
