"""The synthetic reID world and its exports: a Market-1501-layout folder and a PIT-layout folder.

Every random draw comes from a numpy Generator seeded by (seed, stream, ...indices), so the same
config gives identical bytes whatever the order or subset of work, and the PIT world, the
pretraining pool and the cross-dataset target world (each its own stream) never share an identity
with the reID world, whatever their seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from reid.data.datasets import DENSEPOSE_FOLDER
from reid.io import encode_png, encode_raw, write_json_atomic
from reid.synth.body import Body, sample_body, sample_pose
from reid.synth.camera import Camera, CameraDomain, apply_camera, capture, clutter, detection_view, sample_cameras
from reid.synth.render import View
from reid.synth.texture import Outfit, make_atlas, sample_outfit, sibling

# Seed streams: one per kind of draw.
S_PEOPLE, S_ATLAS, S_PLAN, S_IMAGE, S_CAMERAS, S_FRAMES, S_DISTRACT, S_JUNK, S_PIT, S_DENSEPOSE = range(1, 11)
# pool: export_pool's identities; target_train / target: export_target's train and test identities
SPLIT_CODE = {"train": 0, "test": 1, "pool": 2, "target": 3, "target_train": 4}
TRAIN_SPLITS = ("train", "pool", "target_train")  # written to bounding_box_train/ (the others: query + gallery)
# Offset (in units of 1 << 16) of a split's identities in the per-person, stranger and camera streams:
# the pool's and the target's people never replay a world identity's draws, even under the same seed.
STREAM_OFFSET = {"pool": 1, "target": 2, "target_train": 2}
MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_(\d{2})$")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True)
class WorldConfig:
    """The Market-layout world (params: synthesize.world)."""

    seed: int = 0
    n_train: int = 100
    n_test: int = 100
    n_cameras: int = 6
    cameras_per_identity: tuple[int, int] = (2, 3)  # min, max cameras an identity walks past
    images_per_identity: int = 6
    test_images_per_identity: int = 0  # 0: images_per_identity; else a test identity's (Market: 17 train, 22 test)
    n_distractors: int = 80  # pid 0000 gallery crops: strangers and empty boxes
    n_junk: int = 40  # pid -1 gallery crops: badly cut-off people, mostly background
    height: int = 128  # crop H x W (two keys: DVC's run-cache ignores a param named `size`)
    width: int = 64
    tile: int = 32  # atlas tile size T
    hard_negative_rate: float = 0.4  # chance each new identity is a one-detail sibling of the previous one
    occlusion: float = 0.1
    cut_off: float = 0.06
    jpeg_quality: int = 95
    densepose_views: int = 0  # extra crops per training identity in densepose_train/ (any camera, any heading)

    def validate(self) -> None:
        lo, hi = self.cameras_per_identity
        checks = [
            (self.n_train >= 1, "n_train must be >= 1"),
            (self.n_test >= 1, "n_test must be >= 1"),
            (self.n_train + self.n_test <= 9999, "n_train + n_test must be <= 9999 (4-digit pids)"),
            (2 <= self.n_cameras <= 9, "n_cameras must be in 2..9 (one-digit Market camera ids)"),
            (2 <= lo <= hi <= self.n_cameras, "cameras_per_identity must satisfy 2 <= min <= max <= n_cameras"),
            (self.images_per_identity >= 2 * hi,
             "images_per_identity must be >= 2 * cameras_per_identity max (a query and a gallery image per camera)"),
            (self.test_images_per_identity == 0 or self.test_images_per_identity >= 2 * hi,
             "test_images_per_identity must be 0 (as images_per_identity) or >= 2 * cameras_per_identity max"),
            (self.n_distractors >= 0 and self.n_junk >= 0, "n_distractors and n_junk must be >= 0"),
            (self.height >= 32 and self.width >= 16,
             f"height must be >= 32 and width >= 16, got {self.height}x{self.width}"),
            (self.tile >= 4, "tile must be >= 4"),
            (0 <= self.hard_negative_rate < 1, "hard_negative_rate must be in [0, 1)"),
            (0 <= self.occlusion <= 1 and 0 <= self.cut_off <= 1, "occlusion and cut_off must be in [0, 1]"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100"),
            (0 <= self.densepose_views <= 999_999, "densepose_views must be in 0..999999"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every crop."""
        return self.height, self.width


@dataclass(frozen=True)
class PitConfig:
    """The Paired-Image-Texture world (params: synthesize.pit)."""

    seed: int = 0
    n_textures: int = 60
    poses_per_texture: int = 10
    height: int = 128  # person image H x W
    width: int = 64
    tile: int = 32
    n_cameras: int = 4  # imaging conditions to vary over

    def validate(self) -> None:
        if self.n_textures < 1 or self.poses_per_texture < 1:
            raise ValueError("n_textures and poses_per_texture must be >= 1")
        if self.height < 32 or self.width < 16:
            raise ValueError(f"height must be >= 32 and width >= 16, got {self.height}x{self.width}")
        if self.tile < 4:
            raise ValueError("tile must be >= 4")
        if self.n_cameras < 1:
            raise ValueError("n_cameras must be >= 1")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every person image."""
        return self.height, self.width


@dataclass(frozen=True)
class PoolConfig:
    """The pretraining pool (params: synthesize.pretrain): labelled identities for the `pretrain` stage,
    rendered by the same generator as the world but from their own seed stream (SPEC §13)."""

    seed: int = 1
    n_identities: int = 500
    images_per_identity: int = 8
    n_cameras: int = 6
    cameras_per_identity: tuple[int, int] = (2, 4)
    height: int = 128
    width: int = 64
    tile: int = 32
    hard_negative_rate: float = 0.4
    occlusion: float = 0.1
    cut_off: float = 0.06
    jpeg_quality: int = 95

    def world_config(self) -> WorldConfig:
        """The world settings the pool is rendered with (no test split, no strangers)."""
        return WorldConfig(seed=self.seed, n_train=self.n_identities, n_test=1, n_cameras=self.n_cameras,
                           cameras_per_identity=self.cameras_per_identity,
                           images_per_identity=self.images_per_identity, n_distractors=0, n_junk=0,
                           height=self.height, width=self.width, tile=self.tile,
                           hard_negative_rate=self.hard_negative_rate, occlusion=self.occlusion,
                           cut_off=self.cut_off, jpeg_quality=self.jpeg_quality)

    def validate(self) -> None:
        if not 2 <= self.n_identities <= 9998:
            raise ValueError(f"n_identities must be in 2..9998 (4-digit pids), got {self.n_identities}")
        self.world_config().validate()


def _shifted_domain() -> CameraDomain:
    # The default shift: higher cameras (other viewpoints, more foreshortening), dimmer light with
    # stronger colour casts, softer and noisier sensors. Moderate on purpose: people stay recognisable.
    return CameraDomain(elevation=(20.0, 45.0), cast=(0.8, 1.2), brightness=0.8, blur=(0.5, 0.9, 1.3),
                        noise=(4.0, 10.0), resolution=(0.4, 0.8))


@dataclass(frozen=True)
class TargetConfig:
    """The cross-dataset target world (params: synthesize.target): a Market-1501-layout world seen by
    cameras drawn from a shifted `domain`, its identities from their own stream (disjoint from the
    reID world's and the pool's). What counts is its query + gallery (`n_identities`, with distractors
    and junk); its train split is a token one that makes the folder a complete Market-1501 dataset."""

    seed: int = 2
    n_identities: int = 120  # test identities: query + gallery
    n_train: int = 10  # token train identities (bounding_box_train/ must exist); never evaluated
    n_cameras: int = 6
    cameras_per_identity: tuple[int, int] = (2, 3)
    images_per_identity: int = 6
    n_distractors: int = 30
    n_junk: int = 10
    height: int = 128
    width: int = 64
    tile: int = 32
    hard_negative_rate: float = 0.4
    occlusion: float = 0.2
    cut_off: float = 0.1
    jpeg_quality: int = 85
    domain: CameraDomain = dataclasses.field(default_factory=_shifted_domain)

    def world_config(self) -> WorldConfig:
        """The world settings the target is rendered with (no DensePose renders)."""
        return WorldConfig(seed=self.seed, n_train=self.n_train, n_test=self.n_identities, n_cameras=self.n_cameras,
                           cameras_per_identity=self.cameras_per_identity,
                           images_per_identity=self.images_per_identity, n_distractors=self.n_distractors,
                           n_junk=self.n_junk, height=self.height, width=self.width, tile=self.tile,
                           hard_negative_rate=self.hard_negative_rate, occlusion=self.occlusion,
                           cut_off=self.cut_off, jpeg_quality=self.jpeg_quality)

    def validate(self) -> None:
        if self.n_identities < 1 or self.n_train < 1 or self.n_identities + self.n_train > 9999:
            raise ValueError(f"n_identities and n_train must be >= 1 and sum to <= 9999 (4-digit pids), got "
                             f"{self.n_identities} and {self.n_train}")
        self.world_config().validate()
        self.domain.validate()


@dataclass(frozen=True)
class Person:
    pid: int
    split: str
    family: int  # identities of one family differ in one detail (hard negatives)
    outfit: Outfit
    body: Body
    gait: float

    @property
    def stream_key(self) -> int:
        """The person's key in the per-person seed streams: the pid, offset for pool and target
        identities (STREAM_OFFSET) so they never replay a world identity's draws even under the same seed."""
        return self.pid + (1 << 16) * STREAM_OFFSET.get(self.split, 0)


def make_people(cfg: WorldConfig, splits: tuple[str, ...] = ("train", "test")) -> list[Person]:
    """Train identities get pids 1..n_train, test identities the next n_test; families never straddle splits.
    ``splits=("pool",)`` draws cfg.n_train identities from the pool's own stream instead, ``("target",)``
    cfg.n_test test identities from the target's (``"target_train"``: cfg.n_train train identities)."""
    people: list[Person] = []
    family = 0
    sizes = {"train": cfg.n_train, "test": cfg.n_test, "pool": cfg.n_train, "target": cfg.n_test,
             "target_train": cfg.n_train}
    for split, n in ((s, sizes[s]) for s in splits):
        rng = _rng(cfg.seed, S_PEOPLE, SPLIT_CODE[split])
        members: list[Person] = []
        while len(members) < n:
            outfit = sample_outfit(rng)
            while True:
                members.append(Person(len(people) + len(members) + 1, split, family, outfit, sample_body(rng),
                                      float(rng.uniform(0.7, 1.2))))
                if len(members) >= n or rng.random() >= cfg.hard_negative_rate:
                    break
                outfit = sibling(outfit, rng)
            family += 1
        people += members
    return people


@dataclass
class Shot:
    """One exported crop before it gets its file name."""

    pid: int
    cam: int  # 0-based
    folder: str
    rgb: np.ndarray
    iuv: np.ndarray
    box: int = 1
    frame: int | None = None  # None: the next frame of its camera's running counter


def _person_shots(person: Person, atlas: np.ndarray, cams: list[Camera], cfg: WorldConfig) -> list[Shot]:
    """The person's crops: a short walking track in each of a few cameras."""
    plan = _rng(cfg.seed, S_PLAN, person.stream_key)
    lo, hi = cfg.cameras_per_identity
    chosen = sorted(plan.choice(cfg.n_cameras, int(plan.integers(lo, hi + 1)), replace=False).tolist())
    n_images = cfg.images_per_identity
    if person.split not in TRAIN_SPLITS and cfg.test_images_per_identity:
        n_images = cfg.test_images_per_identity
    counts = np.full(len(chosen), 2)
    counts += np.bincount(plan.integers(0, len(chosen), n_images - counts.sum()), minlength=len(chosen))
    shots = []
    for cam, count in zip(chosen, counts, strict=True):
        camera = cams[cam]
        heading = camera.azimuth + 180.0 * (plan.random() < 0.5) + plan.normal(0, camera.spread)
        phase0 = plan.uniform(0, 2 * np.pi)
        query = int(plan.integers(count)) if person.split in ("test", "target") else -1
        for i in range(int(count)):
            rng = _rng(cfg.seed, S_IMAGE, person.stream_key, cam, i)
            pose = dataclasses.replace(sample_pose(rng, person.body, person.gait), phase=float(phase0 + 1.1 * i))
            view = detection_view(heading + rng.normal(0, 8), camera, rng, cfg.cut_off)
            rgb, iuv = capture(atlas, pose, view, camera, cfg.size, rng, cfg.occlusion)
            folder = "bounding_box_train" if person.split in TRAIN_SPLITS else (
                "query" if i == query else "bounding_box_test")
            shots.append(Shot(person.pid, cam, folder, rgb, iuv))
    return shots


def _densepose_shots(person: Person, atlas: np.ndarray, cams: list[Camera], cfg: WorldConfig) -> list[Shot]:
    """Extra crops of a training identity for the lite DensePose's training set: a random camera,
    heading and walking phase each, so the estimator sees every orientation (the reID split walks
    one or two headings per camera). The reID splits never contain them."""
    shots = []
    for i in range(cfg.densepose_views):
        rng = _rng(cfg.seed, S_DENSEPOSE, person.pid, i)
        cam = int(rng.integers(cfg.n_cameras))
        pose = sample_pose(rng, person.body, person.gait)
        view = detection_view(float(rng.uniform(0, 360)), cams[cam], rng, cfg.cut_off)
        rgb, iuv = capture(atlas, pose, view, cams[cam], cfg.size, rng, cfg.occlusion)
        # numbered by view, off the cameras' frame counters, so the reID splits' names stay put
        shots.append(Shot(person.pid, cam, DENSEPOSE_FOLDER, rgb, iuv, box=i % 100, frame=i // 100 + 1))
    return shots


def _stranger_shot(cfg: WorldConfig, cams: list[Camera], stream: int, index: int) -> Shot:
    """A distractor (pid 0: a stranger or an empty box) or a junk crop (pid -1: a badly cut-off person).
    `index` keys its draws (a target world's start at STREAM_OFFSET["target"] << 16)."""
    rng = _rng(cfg.seed, stream, index)
    cam = int(rng.integers(cfg.n_cameras))
    camera = cams[cam]
    atlas = make_atlas(sample_outfit(rng), cfg.tile, rng)
    pose = sample_pose(rng, sample_body(rng))
    azimuth = rng.uniform(0, 360)
    if stream == S_DISTRACT:
        if rng.random() < 0.25:  # an empty detection: background only
            bg = clutter(cfg.size, rng)
            return Shot(0, cam, "bounding_box_test", apply_camera(bg, camera, rng), np.zeros_like(bg),
                        int(rng.integers(1, 5)))
        view = detection_view(azimuth, camera, rng, cfg.cut_off)
        pid = 0
    else:
        # Far too tight (only a torso or legs) or far too loose and off-centre (mostly background).
        if rng.random() < 0.5:
            view = View(azimuth=azimuth, elevation=camera.elevation, fill=float(rng.uniform(1.8, 2.8)),
                        dy=float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.6)))
        else:
            view = View(azimuth=azimuth, elevation=camera.elevation, fill=float(rng.uniform(0.25, 0.45)),
                        dx=float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.45)))
        pid = -1
    rgb, iuv = capture(atlas, pose, view, camera, cfg.size, rng, cfg.occlusion)
    return Shot(pid, cam, "bounding_box_test", rgb, iuv, int(rng.integers(1, 5)))


def market_name(pid: int, cam: int, frame: int, box: int) -> str:
    """Market-1501 stem `PPPP_cCs1_FFFFFF_NN` (pid -1 written as `-1`; cam 0-based in, 1-based out)."""
    return f"{'-1' if pid == -1 else f'{pid:04d}'}_c{cam + 1}s1_{frame:06d}_{box:02d}"


def _replace_folder(out_dir: Path, build: Callable[[Path], None]) -> None:
    """Build into `<out>.tmp` (a stale one is deleted first), then swap it in, so a killed run
    leaves either the old folder or the new one, never half of one."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    old = out_dir.with_name(out_dir.name + ".old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old.exists():
        shutil.rmtree(old)


def _write(path: Path, data: bytes) -> None:
    # Plain writes: the whole folder is built under <out>.tmp and swapped in at once.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _render_job(job: tuple[str, object], cams: list[Camera], cfg: WorldConfig) -> tuple[np.ndarray | None, list[Shot]]:
    """One identity's (atlas, shots), or (None, [one distractor / junk shot]): a pure function of its seeds."""
    kind, item = job
    if kind == "person":
        atlas = make_atlas(item.outfit, cfg.tile, _rng(cfg.seed, S_ATLAS, item.stream_key))
        extra = _densepose_shots(item, atlas, cams, cfg) if item.split == "train" else []
        return atlas, _person_shots(item, atlas, cams, cfg) + extra
    return None, [_stranger_shot(cfg, cams, S_DISTRACT if kind == "distractor" else S_JUNK, item)]


def _rendered(jobs: list, cams: list[Camera], cfg: WorldConfig, workers: int, progress: bool):
    """`_render_job` over `jobs`, in job order, in `workers` processes (1: in this one)."""
    render = functools.partial(_render_job, cams=cams, cfg=cfg)
    bar = functools.partial(tqdm, total=len(jobs), desc="market world", disable=not progress, mininterval=2.0)
    if workers <= 1:
        yield from bar(map(render, jobs))
        return
    # Renders are CPU-bound numpy; processes, not threads. Each job seeds itself, so order is free.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from bar(pool.map(render, jobs, chunksize=4))


def export_market(out_dir: str | os.PathLike, cfg: WorldConfig, *, progress: bool = True, workers: int = 0) -> dict:
    """Write the Market-1501-layout world to `out_dir` (replacing it); returns the file counts.

    `workers` processes render (0: one per CPU core); the bytes written do not depend on it.
    """
    cfg.validate()
    return _export_people(Path(out_dir), cfg, make_people(cfg), "reid.synth market world", progress=progress,
                          workers=workers, strangers=True)


def export_pool(out_dir: str | os.PathLike, cfg: PoolConfig, *, progress: bool = True, workers: int = 0) -> dict:
    """Write a pretraining pool (SPEC §13) to `out_dir`: `cfg.n_identities` labelled identities in a
    Market-layout ``bounding_box_train/``, drawn from the pool's own seed stream, so they are disjoint
    from any world's train and test identities (even under the same seed)."""
    cfg.validate()
    world = cfg.world_config()
    return _export_people(Path(out_dir), world, make_people(world, ("pool",)), "reid.synth pretraining pool",
                          progress=progress, workers=workers, strangers=False)


def export_target(out_dir: str | os.PathLike, cfg: TargetConfig, *, progress: bool = True,
                  workers: int = 0) -> dict:
    """Write a cross-dataset target world to `out_dir` in Market-1501 layout (+ gt_iuv/, textures/,
    world.json): `cfg.n_train` token train and `cfg.n_identities` test identities from the target's own
    stream (disjoint from any world's and pool's) and its own strangers, under cameras drawn from
    `cfg.domain`."""
    cfg.validate()
    world = cfg.world_config()
    offset = STREAM_OFFSET["target"] << 16
    cams = sample_cameras(world.n_cameras, _rng(world.seed, S_CAMERAS, offset), cfg.domain)
    people = make_people(world, ("target_train", "target"))
    return _export_people(Path(out_dir), world, people, "reid.synth target world",
                          progress=progress, workers=workers, strangers=True, cams=cams,
                          stranger_offset=offset, config=dataclasses.asdict(cfg))


def _export_people(out_dir: Path, cfg: WorldConfig, people: list[Person], kind: str, *, progress: bool,
                   workers: int, strangers: bool, cams: list[Camera] | None = None, stranger_offset: int = 0,
                   config: dict | None = None) -> dict:
    """Render `people` (+ distractors and junk when `strangers`, keyed from `stranger_offset`) into a
    Market-layout folder, under `cams` (default: drawn from the world's seed); world.json records
    `config` (default: `cfg`)."""
    workers = workers or os.cpu_count() or 1
    cams = cams if cams is not None else sample_cameras(cfg.n_cameras, _rng(cfg.seed, S_CAMERAS))
    counts: dict[str, int] = {}

    def build(root: Path) -> None:
        frames = np.zeros(cfg.n_cameras, dtype=np.int64)
        frame_rng = _rng(cfg.seed, S_FRAMES)
        jobs = [("person", p) for p in people]
        if strangers:
            jobs += [("distractor", stranger_offset + i) for i in range(cfg.n_distractors)]
            jobs += [("junk", stranger_offset + i) for i in range(cfg.n_junk)]
        for (_, item), (atlas, shots) in zip(jobs, _rendered(jobs, cams, cfg, workers, progress), strict=True):
            if atlas is not None:
                _write(root / "textures" / f"{item.pid:04d}.png", encode_png(atlas))
            for shot in shots:
                if shot.frame is None:
                    frames[shot.cam] += int(frame_rng.integers(5, 60))
                stem = market_name(shot.pid, shot.cam, int(frames[shot.cam]) if shot.frame is None else shot.frame,
                                   shot.box)
                _write(root / shot.folder / f"{stem}.jpg", _jpeg(shot.rgb, cfg.jpeg_quality))
                _write(root / "gt_iuv" / shot.folder / f"{stem}.png", encode_raw(shot.iuv))
                key = {0: "distractors", -1: "junk"}.get(shot.pid, shot.folder)
                counts[key] = counts.get(key, 0) + 1
        write_json_atomic(root / "world.json", {
            "kind": kind,
            "seed": cfg.seed,
            "config": config if config is not None else dataclasses.asdict(cfg),
            "counts": counts,
            "cameras": [dataclasses.asdict(c) for c in cams],
            "identities": [{"pid": p.pid, "split": p.split, "family": p.family, "gait": p.gait,
                            "body": dataclasses.asdict(p.body), "outfit": dataclasses.asdict(p.outfit)}
                           for p in people],
        })

    _replace_folder(out_dir, build)
    return counts


def pit_stem(texture: int, pose: int) -> str:
    return f"pit{texture:05d}_{pose:02d}"


def export_pit(out_dir: str | os.PathLike, cfg: PitConfig, *, progress: bool = True) -> dict:
    """Write the PIT-layout world (images/, textures/, gt_iuv/ paired by stem) to `out_dir`."""
    cfg.validate()
    cams = sample_cameras(cfg.n_cameras, _rng(cfg.seed, S_PIT, 0))

    def build(root: Path) -> None:
        for t in tqdm(range(cfg.n_textures), desc="PIT world", disable=not progress, mininterval=2.0):
            rng = _rng(cfg.seed, S_PIT, 1, t)
            atlas = make_atlas(sample_outfit(rng), cfg.tile, rng)
            body, gait = sample_body(rng), float(rng.uniform(0.7, 1.2))
            atlas_png = encode_png(atlas)
            for k in range(cfg.poses_per_texture):
                shot_rng = _rng(cfg.seed, S_PIT, 2, t, k)
                camera = cams[int(shot_rng.integers(cfg.n_cameras))]
                view = View(azimuth=float(shot_rng.uniform(0, 360)), elevation=float(shot_rng.uniform(0, 25)),
                            fill=float(shot_rng.uniform(0.82, 0.95)), dx=float(shot_rng.normal(0, 0.03)),
                            dy=float(shot_rng.normal(0, 0.02)))
                pose = sample_pose(shot_rng, body, gait)
                rgb, iuv = capture(atlas, pose, view, camera, cfg.size, shot_rng, occlusion=0.0)
                stem = pit_stem(t, k)
                _write(root / "images" / f"{stem}.png", encode_png(rgb))
                _write(root / "textures" / f"{stem}.png", atlas_png)
                _write(root / "gt_iuv" / f"{stem}.png", encode_raw(iuv))
        write_json_atomic(root / "pit.json", {"kind": "reid.synth PIT world", "seed": cfg.seed,
                                              "config": dataclasses.asdict(cfg),
                                              "pairs": cfg.n_textures * cfg.poses_per_texture})

    _replace_folder(Path(out_dir), build)
    return {"pairs": cfg.n_textures * cfg.poses_per_texture}

