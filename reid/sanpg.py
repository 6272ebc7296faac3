"""SAN-PG (SPEC §7): SA-Enc + SA-Dec trained on PIT pairs with L1 reconstruction only, then run on
every reID crop to give its pseudo ground-truth texture; plus the texture metrics.

Textures are atlases (`reid.parts`): uint8 [6T, 4T, 3] on disk, float [3, 6T, 4T] in [-1, 1] for the
network (x / 127.5 - 1, `reid.data.transforms.texture_tensor`; not the official repo's /225 typo), and
back with `to_uint8` (round((x + 1) * 127.5), clipped). Every L1 reported here is the mean absolute
difference in those [-1, 1] units over all atlas pixels and channels (1.0 = 127.5 grey levels).

Held-out split: by texture identity, not by pair — pairs whose texture file bytes are identical share
an identity (PIT renders one texture in several poses), so held-out textures are never seen in training.

Augmentation (crop, optional flip and erasing) touches the person image only; the texture target is
never augmented. Flip is off by default: a mirrored person has the mirrored atlas (left/right charts
swapped, patterns reversed), so keeping the target would teach a wrong texture.

Exact resumption: torch's RNG is reseeded from (seed, epoch) at the start of every epoch (shuffle and
augmentation), and weights, Adam moments and the LR schedule come back from the checkpoint, so a run
resumed after epoch e ends with the same weights as an uninterrupted one (CPU, same seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from reid.data.pit import PitPair, load_pit_pairs, read_pit_pair
from reid.data.transforms import check_augment_settings, eval_transform, train_transform
from reid.device import check_device_name, default_device
from reid.engine.checkpoint import checkpoint_file, fingerprint, load_checkpoint, save_checkpoint
from reid.engine.optim import build_optimizer, build_scheduler, check_optim_settings
from reid.engine.trainer import epoch_seed
from reid.io import encode_png, read_image, remove_stale_temps, write_torch_atomic
from reid.parts import atlas_shape
from reid.viz import make_grid

# --- configs ---


@dataclass(frozen=True)
class SanPGArch:
    """What rebuilds a trained SAN-PG for inference (kept in model.pt)."""

    backbone: str = "resnet18"
    tile: int = 32
    width_mult: float = 1.0
    last_stride: int = 1
    height: int = 128  # network input size
    width: int = 64

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass
class SanPGConfig:
    """params.yaml section ``train_sanpg``. Optimiser defaults follow the official repo (AMSGrad, wd 5e-4)."""

    pit_root: str = "data/synth/pit"  # a PIT-layout folder (images/, textures/ atlases of `tile`)
    backbone: str = "resnet18"
    pretrained: str | None = "hub"  # torchvision state-dict path, "hub" (torch hub cache if present) or null
    tile: int = 32
    width_mult: float = 1.0
    last_stride: int = 1
    decoder_init: Literal["official", "pytorch"] = "pytorch"  # see build_sanpg
    height: int = 128
    width: int = 64
    epochs: int = 8
    batch_size: int = 32
    lr: float = 8e-4
    weight_decay: float = 5e-4
    amsgrad: bool = True
    warmup_epochs: int = 0  # linear warm-up from lr * warmup_factor (per epoch, reid.engine.optim)
    warmup_factor: float = 0.1
    step_epochs: int = 40  # lr x gamma at every multiple of step_epochs
    gamma: float = 0.5
    crop_scale: float = 1.125  # random crop = resize x crop_scale, crop back (1 = off); image only
    flip_p: float = 0.0  # see module doc: a flip changes the true texture
    erasing_p: float = 0.0
    val_fraction: float = 0.1  # share of texture identities held out
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 64
    n_samples: int = 6  # held-out pairs in samples.png

    def validate(self) -> None:
        if self.backbone not in ("resnet18", "resnet50"):
            raise ValueError(f"backbone must be resnet18 or resnet50, got {self.backbone!r}")
        for name in ("tile", "epochs", "batch_size", "height", "width", "step_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        for name in ("warmup_epochs", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16, got {self.height}x{self.width}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if not 0 < self.width_mult <= 4:
            raise ValueError(f"width_mult must lie in (0, 4], got {self.width_mult}")
        check_optim_settings(self)
        check_augment_settings(self.crop_scale, self.flip_p, self.erasing_p)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        check_device_name(self.device)

    def arch(self) -> SanPGArch:
        return SanPGArch(self.backbone, self.tile, self.width_mult, self.last_stride, self.height, self.width)


@dataclass
class TextureConfig:
    """params.yaml section ``texture``."""

    batch_size: int = 64
    device: str = "auto"
    num_workers: int = 0  # DataLoader workers decoding crops
    n_samples: int = 8  # test crops in texture_samples.png

    def validate(self) -> None:
        if self.batch_size < 1 or self.n_samples < 1:
            raise ValueError(f"batch_size and n_samples must be >= 1, got {self.batch_size}, {self.n_samples}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        check_device_name(self.device)


# --- texture normalisation ---


def to_uint8(texture: torch.Tensor) -> np.ndarray:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]: round((x + 1) * 127.5), clipped."""
    x = ((texture.detach().float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def textures_tensor(atlases: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (batched `texture_tensor`)."""
    return torch.from_numpy(np.ascontiguousarray(atlases)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


# --- PIT data and the held-out split ---


@dataclass
class PitData:
    """PIT pairs in memory: person images (as stored) and the distinct textures they index."""

    stems: list[str]
    images: list[np.ndarray]  # uint8 [H, W, 3] each
    textures: np.ndarray  # uint8 [M, 6T, 4T, 3], one per texture identity, in first-seen order
    texture_of: np.ndarray  # int64 [N]: pair i shows textures[texture_of[i]]
    digest: str = ""  # sha1 over stems and texture keys (ties checkpoints to the data)

    def __len__(self) -> int:
        return len(self.stems)


def load_pit(root: str | Path, tile: int, *, progress: bool = True) -> PitData:
    """Every PIT pair under `root` (reid.data.pit), grouped by texture identity (identical texture bytes).

    Textures must be atlases of tile `tile`; an error names the first file that is not.
    """
    pairs: list[PitPair] = load_pit_pairs(root)
    expected = atlas_shape(tile)
    stems, images, textures, texture_of = [], [], [], []
    index: dict[str, int] = {}
    digest = hashlib.sha1()
    for pair in tqdm(pairs, desc="read PIT", unit="pair", disable=not progress, mininterval=1.0):
        key = hashlib.sha1(Path(pair.texture).read_bytes()).hexdigest()
        image, texture, _ = read_pit_pair(pair)
        if texture.shape != expected:
            raise ValueError(f"{pair.texture}: texture shape {texture.shape} is not the atlas {expected} "
                             f"of tile {tile} (parameter train_sanpg.tile)")
        if key not in index:
            index[key] = len(textures)
            textures.append(texture)
        stems.append(pair.stem)
        images.append(image)
        texture_of.append(index[key])
        digest.update(f"{pair.stem}:{key};".encode())
    return PitData(stems, images, np.stack(textures), np.asarray(texture_of, np.int64), digest.hexdigest())


def split_by_texture(texture_of: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) pair indices; a seeded round(val_fraction * M) of the M textures (at least 1,
    at most M - 1) are held out with all their pairs."""
    n_textures = int(texture_of.max()) + 1
    if n_textures < 2:
        raise ValueError(f"PIT holds {n_textures} texture identity; a held-out split needs at least 2")
    n_held = min(max(1, round(val_fraction * n_textures)), n_textures - 1)
    held = np.random.default_rng(seed).permutation(n_textures)[:n_held]
    is_held = np.isin(texture_of, held)
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


def mean_texture(data: PitData, indices: np.ndarray) -> torch.Tensor:
    """float [3, 6T, 4T] in [-1, 1]: the mean target over pairs `indices` (the mean-texture predictor)."""
    counts = np.bincount(data.texture_of[indices], minlength=len(data.textures)).astype(np.float64)
    mean = np.tensordot(counts / counts.sum(), data.textures.astype(np.float64), axes=1)
    return torch.from_numpy(mean / 127.5 - 1.0).float().permute(2, 0, 1).contiguous()


# --- model ---


def build_sanpg(arch: SanPGArch, pretrained: str | None = None, decoder_init: str = "official") -> nn.Module:
    """SANPG of reid.modeling.san. decoder_init "pytorch" resets the decoder's convs and BNs to PyTorch's
    defaults: the official init (Xavier gain 0.02) shrinks the signal ~50x per up-convolution, so the
    output starts as a constant and a CPU-budget run (a few hundred steps) never leaves it."""
    from reid.modeling.san import SANPG  # the SA-Enc + SA-Dec of SPEC §7

    model = SANPG(arch.backbone, pretrained, arch.tile, width_mult=arch.width_mult, last_stride=arch.last_stride)
    if decoder_init == "pytorch":
        for module in model.decoder.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()
    elif decoder_init != "official":
        raise ValueError(f"decoder_init must be official or pytorch, got {decoder_init!r}")
    return model


def _json_tensor(obj: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(obj, sort_keys=True).encode()), dtype=torch.uint8)


def save_sanpg(path: str | Path, model: nn.Module, arch: SanPGArch, mean: torch.Tensor) -> None:
    """model.pt: tensors only — weights, the architecture as JSON bytes, the mean training texture."""
    state = {"model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
             "arch": _json_tensor(dataclasses.asdict(arch)), "mean_texture": mean.detach().cpu()}
    write_torch_atomic(path, state)


def load_sanpg(path: str | Path) -> tuple[nn.Module, SanPGArch, torch.Tensor]:
    """(model in eval mode on CPU, its architecture, the mean training texture) from `save_sanpg`'s file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"SAN-PG model not found: {path} (run the train_sanpg stage)")
    state = load_checkpoint(path)
    try:
        arch = SanPGArch(**json.loads(bytes(state["arch"].tolist()).decode()))
        model = build_sanpg(arch)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} is not a SAN-PG model file: {str(err)[:300]}") from None
    return model.eval(), arch, state["mean_texture"].float()


# --- training ---


@dataclass
class TrainOutcome:
    epochs: int
    train_time_s: float  # summed epoch times, across resumptions
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)  # this run's per-epoch metrics


def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (the reconstruction loss; [-1, 1] units)."""
    return (prediction - target).abs().mean()


def _images_tensor(images: Sequence[np.ndarray], transform: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    return torch.stack([transform(image) for image in images])


def run_key(cfg: SanPGConfig, data: PitData) -> str:
    """What a resumable checkpoint must agree on: all settings except epochs/device/reporting, and the data."""
    skip = {"epochs", "device", "eval_batch_size", "n_samples", "pit_root"}  # the data enters via its digest
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    return f"{sorted(settings.items())}|{data.digest}"


EpochCallback = Callable[[int, dict[str, float]], None]


def train_sanpg(model: nn.Module, data: PitData, train_idx: np.ndarray, held_idx: np.ndarray, cfg: SanPGConfig,
                checkpoint_dir: str | Path | None = None, *, on_epoch: EpochCallback | None = None,
                stop_after: int | None = None, progress: bool = True) -> TrainOutcome:
    """Train `model` in place with L1 to the texture; resume from ``checkpoint_dir/last.pt`` when it matches.

    After every epoch: held-out L1 (`evaluate_l1`), ``on_epoch(epoch, metrics)`` (DVCLive in the stage),
    then an atomic checkpoint. `stop_after` ends after that many epochs of this call (as if killed; tests).
    """
    device = default_device(cfg.device)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    key = fingerprint(run_key(cfg, data))
    ckpt = checkpoint_file(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        remove_stale_temps(ckpt.parent)  # a killed save's partial file must not stay in the persisted folder
    start, total_time, total_images = 0, 0.0, 0
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt)
        if torch.equal(state["fingerprint"], key) and int(state["epoch"]) <= cfg.epochs:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, total_time, total_images = int(state["epoch"]), float(state["train_time_s"]), int(state["images"])
        else:
            warnings.warn(f"{ckpt} was written with other settings or data (or past epochs={cfg.epochs}); "
                          "training from scratch", stacklevel=2)

    transform = train_transform(cfg.arch().size, crop_scale=cfg.crop_scale, flip_p=cfg.flip_p,
                                erasing_p=cfg.erasing_p)
    targets = textures_tensor(data.textures)  # [M, 3, 6T, 4T], indexed per batch
    history = []
    for epoch in range(start, cfg.epochs):
        if stop_after is not None and epoch >= start + stop_after:
            break
        torch.manual_seed(epoch_seed(cfg.seed, epoch, 0))  # shuffle + augmentation of this epoch only
        order = train_idx[torch.randperm(len(train_idx)).numpy()]
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        t0, loss_sum = time.perf_counter(), 0.0
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        bar = tqdm(batches, desc=f"SAN-PG epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for idx in bar:
            images = _images_tensor([data.images[i] for i in idx], transform).to(device, non_blocking=True)
            target = targets[data.texture_of[idx]].to(device, non_blocking=True)
            loss = l1(model(images), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            bar.set_postfix(l1=f"{loss.item():.3f}")
        scheduler.step()
        seconds = time.perf_counter() - t0
        total_time += seconds
        total_images += len(order)
        # No timings: identical runs log identical curves (the total time is in TrainOutcome).
        metrics = {"train_l1": loss_sum / len(order), "heldout_l1": evaluate_l1(model, data, held_idx, cfg)["l1"],
                   "lr": lr}
        if not np.isfinite(metrics["train_l1"]):
            raise FloatingPointError(f"SAN-PG training diverged: L1 {metrics['train_l1']} in epoch {epoch + 1}")
        history.append(metrics)
        # Log before checkpointing: a kill in between re-runs this epoch, and the resumed run drops
        # the curves' rows from this epoch on (reid.io.drop_live_steps_from) before logging it again.
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if ckpt is not None:
            save_checkpoint(ckpt, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": torch.tensor(epoch + 1), "fingerprint": key,
                "train_time_s": torch.tensor(total_time, dtype=torch.float64), "images": torch.tensor(total_images)})
    return TrainOutcome(cfg.epochs, total_time, total_images / max(total_time, 1e-9), history)


# --- inference and metrics ---


@torch.no_grad()
def predict_textures(model: nn.Module, images: torch.Tensor, device: torch.device,
                     batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Float textures [b, 3, 6T, 4T] in [-1, 1] (on CPU) for normalised images [N, 3, H, W], batch by batch."""
    model.eval().to(device)
    for i in range(0, len(images), batch_size):
        yield model(images[i:i + batch_size].to(device)).float().cpu()


def evaluate_l1(model: nn.Module, data: PitData, indices: np.ndarray, cfg: SanPGConfig) -> dict[str, float]:
    """SAN-PG's L1 over pairs `indices` (eval transform, all atlas pixels, [-1, 1] units) and their count."""
    device = default_device(cfg.device)
    images = _images_tensor([data.images[i] for i in indices], eval_transform(cfg.arch().size))
    targets = textures_tensor(data.textures)
    total = 0.0
    was_training = model.training
    for start, pred in zip(range(0, len(indices), cfg.eval_batch_size),
                           predict_textures(model, images, device, cfg.eval_batch_size), strict=True):
        idx = indices[start:start + cfg.eval_batch_size]
        total += (pred - targets[data.texture_of[idx]]).abs().mean(dim=(1, 2, 3)).sum().item()
    model.train(was_training)
    return {"l1": total / max(len(indices), 1), "n": len(indices)}


def texture_l1(prediction: np.ndarray, target: np.ndarray) -> float:
    """L1 in [-1, 1] units between two uint8 atlases (or float ones already in [-1, 1] when float)."""
    p = prediction.astype(np.float64) / 127.5 - 1 if prediction.dtype == np.uint8 else prediction.astype(np.float64)
    t = target.astype(np.float64) / 127.5 - 1 if target.dtype == np.uint8 else target.astype(np.float64)
    return float(np.abs(p - t).mean())


# --- pictures ---


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 255) -> np.ndarray:
    """`image` scaled to fit (H, W) with its aspect kept, centred on a `pad_value` canvas."""
    h, w = size
    scale = min(h / image.shape[0], w / image.shape[1])
    nh, nw = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    canvas = np.full((h, w, 3), pad_value, np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    canvas[y:y + nh, x:x + nw] = resized
    return canvas


def triplet_grid(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], captions: Sequence[str]) -> np.ndarray:
    """One row per (person image, predicted atlas, true atlas or None) at the atlas size; 3 columns."""
    cell = rows[0][1].shape[:2]
    blank = np.full((*cell, 3), 255, np.uint8)
    images = [im for person, pred, true in rows for im in (letterbox(person, cell), pred, blank if true is None else true)]
    return make_grid(images, 3, captions=[c for caption in captions for c in (caption, "predicted", "true")],
                     cell_size=cell)


# --- the pseudo-texture cache (texture stage) ---

TEST_SPLITS = ("query", "gallery")


def true_atlas_reader(root: str | Path) -> Callable[[int], np.ndarray] | None:
    """pid -> the identity's true atlas from ``root/textures/<pid:04d>.png`` (the synthetic world's ground
    truth, cached per pid), or None when `root` has no textures/ folder (real datasets)."""
    folder = Path(root) / "textures"
    if not folder.is_dir():
        return None
    cache: dict[int, np.ndarray] = {}

    def read(pid: int) -> np.ndarray:
        if pid not in cache:
            cache[pid] = read_image(folder / f"{pid:04d}.png")  # ImageReadError names a missing file
        return cache[pid]

    return read


@dataclass
class TextureScore:
    """Running L1 ([-1, 1] units, all atlas pixels) of pseudo textures and of the mean-texture predictor
    against the true atlas of each image's identity."""

    mean: np.ndarray  # float64 [6T, 4T, 3] in [-1, 1]
    pseudo_sum: float = 0.0
    floor_sum: float = 0.0
    n: int = 0
    pids: set[int] = field(default_factory=set)

    def update(self, pseudo: np.ndarray, true: np.ndarray, pid: int) -> None:
        if pseudo.shape != true.shape:
            raise ValueError(f"true atlas of pid {pid} has shape {true.shape}, pseudo textures {pseudo.shape}")
        self.pseudo_sum += texture_l1(pseudo, true)
        self.floor_sum += texture_l1(self.mean, true)
        self.n += 1
        self.pids.add(pid)

    def summary(self) -> dict[str, float | int | None]:
        if self.n == 0:
            return {"l1_pseudo": None, "l1_mean_texture": None, "gain_over_mean_texture": None,
                    "n_images": 0, "n_identities": 0}
        pseudo, floor = self.pseudo_sum / self.n, self.floor_sum / self.n
        return {"l1_pseudo": round(pseudo, 5), "l1_mean_texture": round(floor, 5),
                "gain_over_mean_texture": round(1 - pseudo / floor, 4) if floor > 0 else None,
                "n_images": self.n, "n_identities": len(self.pids)}


@dataclass
class TextureCache:
    table: pa.Table  # image_id: string, texture: binary (PNG of the uint8 RGB atlas, reid.io.encode_png)
    score: TextureScore | None  # None when no true atlases exist
    samples: dict[int, np.ndarray]  # manifest row -> its pseudo texture (for the picture)
    seconds: float


def sample_rows(manifest: pa.Table, n: int) -> list[int]:
    """Up to `n` manifest rows for the picture: test rows (pid > 0) of distinct identities, evenly spread."""
    splits, pids = manifest["split"].to_pylist(), manifest["pid"].to_pylist()
    first: dict[int, int] = {}
    for row, (split, pid) in enumerate(zip(splits, pids, strict=True)):
        if split in TEST_SPLITS and pid > 0:
            first.setdefault(pid, row)
    rows = list(first.values()) or list(range(len(splits)))
    if n == 0 or not rows:
        return []
    return sorted({rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)})


@torch.no_grad()
def build_texture_cache(model: nn.Module, dataset: Dataset, manifest: pa.Table, cfg: TextureConfig, *,
                        device: torch.device, truth: Callable[[int], np.ndarray] | None = None,
                        mean: torch.Tensor | None = None, progress: bool = True) -> TextureCache:
    """SAN-PG on every item of `dataset` (rows of `manifest`, eval transform) -> lossless atlas PNGs.

    With `truth` (and `mean`), test rows (query/gallery, pid > 0) are scored against their identity's
    true atlas, beside the mean-texture predictor.
    """
    if len(dataset) != manifest.num_rows:
        raise ValueError(f"texture cache: {len(dataset)} dataset items for {manifest.num_rows} manifest rows")
    model.eval().to(device)
    score = TextureScore(mean.permute(1, 2, 0).double().numpy()) if truth is not None and mean is not None else None
    splits, pids = manifest["split"].to_pylist(), manifest["pid"].to_pylist()
    shown = set(sample_rows(manifest, cfg.n_samples))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    pngs: list[bytes] = []
    samples: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    for batch in tqdm(loader, desc="pseudo textures", unit="batch", disable=not progress):
        atlases = to_uint8(model(batch["image"].to(device, non_blocking=True)))
        for atlas in atlases:
            row = len(pngs)
            pngs.append(encode_png(atlas))
            if row in shown:
                samples[row] = atlas
            if score is not None and splits[row] in TEST_SPLITS and pids[row] > 0:
                score.update(atlas, truth(pids[row]), pids[row])
    table = pa.table({"image_id": manifest["image_id"].cast(pa.string()), "texture": pa.array(pngs, pa.binary())})
    return TextureCache(table, score, samples, time.perf_counter() - t0)
