"""Training and held-out evaluation of the lite DensePose network (SPEC §5).

Data: the synthetic world's Market-layout export — crops in <split>/*.jpg with ground-truth IUV
in gt_iuv/<split>/<stem>.png (I, U, V in channel order as cv2 reads them). Training uses
bounding_box_train (pid > 0) and, when the world has them, the extra training-identity renders in
densepose_train/; metrics come from test identities (bounding_box_test, query) only.

Targets are soft: labels at 2x the heads' resolution (a 128 x 64 crop's own pixels for the
default 128 x 64 input) are pooled into per-cell part shares and per-part mean U/V
(``soft_targets``), so thin limbs keep their weight at the heads' coarser grid.

Resume: every epoch ends with ``on_epoch`` (DVCLive in the stage), then an atomic checkpoint
(model + optimizer state, tensors and plain numbers only). The shuffle order of epoch e is drawn
from seed and e alone, and the learning rate is a function of the global step, so a run resumed
from epoch e ends with the same weights as an uninterrupted one (CPU, same seed).

No horizontal-flip augmentation: rendering a symmetric pose from azimuth a and -a shows that the
synthetic charts are not all mirror-consistent (torso V becomes 1 - V, the feet charts differ), so a
flip by label swap alone would teach wrong U/V.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from reid.data.datasets import parse_market_name
from reid.densepose.lite import (
    OUTPUT_STRIDE,
    LiteArch,
    LiteDensePose,
    LiteEstimator,
    build_model,
    resize_crops,
    to_input,
)
from reid.densepose.quality import IUVQuality
from reid.device import default_device
from reid.io import decode_raw, read_image, remove_stale_temps, write_torch_atomic
from reid.parts import N_CLASSES, N_PARTS, decode_iuv
from reid.synth.world import DENSEPOSE_FOLDER

TRAIN_SPLITS = ("bounding_box_train",)
EXTRA_TRAIN_SPLITS = (DENSEPOSE_FOLDER,)  # read when the world was exported with densepose_views > 0
HELD_OUT_SPLITS = ("bounding_box_test", "query")


@dataclass
class TrainDensePoseConfig:
    """params.yaml section `train_densepose`."""

    epochs: int = 28
    batch_size: int = 16
    lr: float = 8e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    uv_weight: float = 1.0  # L1 on U/V vs cross-entropy on parts
    recolor: bool = True  # colour augmentation (channel shuffle, gains, offset): against texture memorisation
    box_jitter: float = 0.1  # random scale 1 +- j and shift +- j (of the half size) of crop and targets; 0: off
    width: int = LiteArch.width  # the architecture's defaults live in LiteArch
    input_height: int = LiteArch.input_height
    input_width: int = LiteArch.input_width
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # 0: torch's default (all cores); 1 can be faster on a shared machine
    max_train_images: int = 0  # 0: all
    max_eval_images: int = 0  # 0: all
    eval_batch_size: int = 64

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "width", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_threads", "max_train_images", "max_eval_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.box_jitter < 0.5:
            raise ValueError(f"box_jitter must lie in [0, 0.5), got {self.box_jitter}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.arch().validate()

    def arch(self) -> LiteArch:
        return LiteArch(self.width, self.input_height, self.input_width)


# --- data ---

def labelled_crops(root: Path, splits: Sequence[str], limit: int = 0,
                   optional: Sequence[str] = ()) -> list[tuple[Path, Path]]:
    """Sorted (crop, gt IUV) path pairs of identities with pid > 0 in `splits`, then in those of the
    `optional` splits that exist (first `limit` if > 0)."""
    pairs = []
    folders = [Path(root) / split for split in splits]
    missing = [folder for folder in folders if not folder.is_dir()]
    if missing:
        raise FileNotFoundError(f"split folder not found: {missing[0]}")
    folders += [Path(root) / name for name in optional if (Path(root) / name).is_dir()]
    for folder in folders:
        split = folder.name
        for crop in sorted(folder.glob("*.jpg")):
            try:
                pid, _ = parse_market_name(crop.name)
            except ValueError as err:
                raise ValueError(f"{crop}: {err}") from None
            if pid > 0:
                pairs.append((crop, Path(root) / "gt_iuv" / split / f"{crop.stem}.png"))
    if not pairs:
        raise ValueError(f"no crops with pid > 0 under {root} in {', '.join(splits)}")
    return pairs[:limit] if limit else pairs


def read_gt_iuv(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth IUV uint8 [H, W, 3] of a crop of `shape`; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth IUV not found: {path}")
    iuv = decode_raw(path.read_bytes())
    if iuv.ndim != 3 or iuv.shape[:2] != tuple(shape):
        raise ValueError(f"{path}: IUV shape {iuv.shape} does not match its crop {tuple(shape)}")
    decode_iuv(iuv)  # validates part indices
    return iuv


def load_pairs(pairs: Sequence[tuple[Path, Path]], desc: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, iuvs = [], []
    for crop, gt in tqdm(pairs, desc=desc, unit="img"):
        image = read_image(crop)
        images.append(image)
        iuvs.append(read_gt_iuv(gt, image.shape[:2]))
    return images, iuvs


LABEL_SUPERSAMPLE = 2  # label samples per head cell and axis, pooled into each batch's soft targets


def training_arrays(images: Sequence[np.ndarray], iuvs: Sequence[np.ndarray], arch: LiteArch) -> dict[str, torch.Tensor]:
    """Crops at the input size (uint8 [N,H,W,3]) and IUV labels at LABEL_SUPERSAMPLE x the heads' size
    (parts uint8, u/v float): 128 x 64 for a 128 x 64 input, a synthetic crop's own size.

    The loss pools the labels into soft targets at the heads' size (``soft_targets``).
    """
    h, w = arch.input_height, arch.input_width
    x = resize_crops(images, h, w)  # exactly as at inference
    # Nearest keeps labels exact and U/V consistent with their label.
    scale = LABEL_SUPERSAMPLE / OUTPUT_STRIDE
    size = (round(w * scale), round(h * scale))
    t = np.stack([cv2.resize(iuv, size, interpolation=cv2.INTER_NEAREST) for iuv in iuvs])
    parts, u, v = decode_iuv(t)
    return {"image": torch.from_numpy(x), "parts": torch.from_numpy(parts.astype(np.uint8)),
            "u": torch.from_numpy(u), "v": torch.from_numpy(v)}


# --- loss ---

def soft_targets(parts: torch.Tensor, u: torch.Tensor, v: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(part shares [B,25,h,w], per-part mean U/V [B,2,24,h,w]) from labels [B,H,W] `factor` x finer.

    Each head cell gets the share of every part among its factor x factor label samples, so a
    limb thinner than a cell still gets its weight (nearest-neighbour labels at the heads' size
    lose it: upsampled to 128 x 64 crops, perfect nearest labels at 64 x 32 score ~0.74 part mIoU,
    perfect shares ~0.91), and each part's mean U, V within the cell (0 where absent).
    Sums are scattered per label sample (a one-hot volume of every part is 5x slower).
    """
    b, big_h, big_w = parts.shape
    h, w = big_h // factor, big_w // factor
    rows = torch.arange(big_h, device=parts.device) // factor
    cols = torch.arange(big_w, device=parts.device) // factor
    cell = (rows[:, None] * w + cols[None, :]).expand(b, big_h, big_w)
    parts = parts.long()
    counts = torch.zeros(b, N_CLASSES * h * w, device=parts.device)
    counts.scatter_add_(1, (parts * (h * w) + cell).reshape(b, -1), torch.ones(b, big_h * big_w, device=parts.device))
    counts = counts.view(b, N_CLASSES, h, w)
    fg = (parts > 0).float()
    index = ((parts - 1).clamp(min=0) * (h * w) + cell).reshape(b, 1, -1).expand(b, 2, -1)
    uv_sum = torch.zeros(b, 2, N_PARTS * h * w, device=parts.device)
    uv_sum.scatter_add_(2, index, torch.stack([u * fg, v * fg], 1).reshape(b, 2, -1))
    uv = uv_sum.view(b, 2, N_PARTS, h, w) / counts[:, None, 1:].clamp(min=1)
    return counts / factor**2, uv


def lite_loss(logits: torch.Tensor, uv: torch.Tensor, parts: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
              uv_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, part CE, U/V L1) of head outputs against labels at the same or an integer-times finer size.

    Part loss: cross-entropy against the soft part shares. U/V loss: as in DensePose, each part's
    channel is compared with that part's U/V only, here weighted by the part's share of the cell
    (with labels at the heads' size: the mean over foreground pixels of the ground-truth part's error).
    """
    (h, w), (fh, fw) = logits.shape[-2:], parts.shape[-2:]
    factor = fh // h
    if fh != factor * h or fw != factor * w or factor < 1:
        raise ValueError(f"labels {fh}x{fw} are not an integer multiple of the heads' {h}x{w}")
    shares, target_uv = soft_targets(parts, u, v, factor)
    part_loss = F.cross_entropy(logits, shares)
    weight = shares[:, None, 1:]
    total_weight = weight.sum() * 2
    if total_weight == 0:
        uv_loss = uv.sum() * 0.0
    else:
        uv_loss = (weight * (uv - target_uv).abs()).sum() / total_weight
    return part_loss + uv_weight * uv_loss, part_loss, uv_loss


# --- training ---

def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to 1% of base_lr, from the global step alone (resume-safe)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of epoch `epoch` (order, augmentation), from the seed and epoch alone."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def random_recolor(generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """Colour augmentation of a [0, 1] batch [B, 3, H, W]: per-sample channel shuffle, gains, offset.

    Labels do not depend on colour, and a few hundred training textures are easy to memorise.
    """
    def recolor(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        perm = torch.rand(b, 3, generator=generator).argsort(1).to(x.device)
        gain = (0.6 + 0.8 * torch.rand(b, 3, 1, 1, generator=generator)).to(x.device)
        offset = (0.2 * torch.rand(b, 1, 1, 1, generator=generator) - 0.1).to(x.device)
        x = x.gather(1, perm[:, :, None, None].expand_as(x))
        return (x * gain + offset).clamp(0.0, 1.0)
    return recolor


def random_box_jitter(batch: dict[str, torch.Tensor], x: torch.Tensor, jitter: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rescale and shift input x [B,3,H,W] (bilinear) and its targets (nearest) by one random affine per sample.

    Mimics detection-box jitter; pixels pulled in from outside the crop become background.
    """
    b = x.shape[0]
    scale = 1 + jitter * (2 * torch.rand(b, generator=generator) - 1)
    shift = jitter * (2 * torch.rand(b, 2, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    theta = theta.to(x.device)

    def warp(t: torch.Tensor, mode: str) -> torch.Tensor:
        grid = F.affine_grid(theta, list(t.shape), align_corners=False)
        return F.grid_sample(t, grid, mode=mode, padding_mode="zeros", align_corners=False)

    targets = warp(torch.stack([batch["parts"].float(), batch["u"], batch["v"]], 1), "nearest")
    parts = targets[:, 0].round().to(batch["parts"].dtype)
    return warp(x, "bilinear"), {"parts": parts, "u": targets[:, 1], "v": targets[:, 2]}


def run_fingerprint(config: TrainDensePoseConfig, data: dict[str, torch.Tensor]) -> str:
    """What a checkpoint must match to be resumed: the training config and data (device and threads may change)."""
    fields = {k: v for k, v in asdict(config).items() if k not in {"device", "num_threads", "eval_batch_size",
                                                                   "max_eval_images"}}
    digest = hashlib.sha1()
    for key in sorted(data):
        digest.update(data[key].numpy().tobytes())
    return json.dumps({**fields, "data_sha1": digest.hexdigest()}, sort_keys=True)


def save_checkpoint(path: Path, model: LiteDensePose, optimizer: torch.optim.Optimizer, epoch: int,
                    fingerprint: str, elapsed: float) -> None:
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "epoch": epoch, "fingerprint": fingerprint, "elapsed": elapsed}
    write_torch_atomic(path, state)


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it exists and was made by the same config, else None."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None


def resumable_epoch(checkpoint: Path, config: TrainDensePoseConfig, data: dict[str, torch.Tensor]) -> int:
    """Epochs already done by a matching checkpoint at `checkpoint` (0 if none)."""
    state = load_checkpoint(checkpoint, run_fingerprint(config, data))
    return 0 if state is None else int(state["epoch"])


EpochCallback = Callable[[int, dict[str, float]], None]


def train_lite(config: TrainDensePoseConfig, data: dict[str, torch.Tensor], checkpoint: Path | None = None,
               on_epoch: EpochCallback | None = None, stop_after: int | None = None) -> tuple[LiteDensePose, float]:
    """Train on `data` (from training_arrays); returns (model in eval mode, training seconds incl. resumed part).

    With `checkpoint`, resumes from it when it matches the config and rewrites it every epoch.
    `stop_after` ends after that many epochs (as if killed; for tests). `on_epoch(epoch, metrics)` is
    called after each epoch, before its checkpoint (DVCLive logging in the stage; no timings, so
    identical runs log identical curves).
    """
    device = default_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    model = build_model(config.arch()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(data["image"])
    steps_per_epoch = math.ceil(n / config.batch_size)
    total, warmup = steps_per_epoch * config.epochs, max(1, round(config.warmup_epochs * steps_per_epoch))
    fingerprint = run_fingerprint(config, data)

    start_epoch, elapsed = 0, 0.0
    if checkpoint:
        remove_stale_temps(Path(checkpoint).parent)  # a killed save's partial file must not stay in the persisted folder
    state = load_checkpoint(checkpoint, fingerprint) if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, elapsed = int(state["epoch"]), float(state["elapsed"])

    for epoch in range(start_epoch, config.epochs):
        if stop_after is not None and epoch >= start_epoch + stop_after:
            break
        t0 = time.perf_counter()
        model.train()
        generator = epoch_generator(config.seed, epoch)
        order = torch.randperm(n, generator=generator)
        recolor = random_recolor(generator) if config.recolor else None
        sums = torch.zeros(3)
        bar = tqdm(range(steps_per_epoch), desc=f"lite densepose epoch {epoch + 1}/{config.epochs}", unit="batch")
        for i in bar:
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            batch = {k: t[idx].to(device, non_blocking=True) for k, t in data.items()}
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + i, total, warmup, config.lr)
            x = to_input(batch["image"], device, recolor)
            if config.box_jitter > 0:
                x, batch = random_box_jitter(batch, x, config.box_jitter, generator)
            logits, uv = model(x)
            loss, part_loss, uv_loss = lite_loss(logits, uv, batch["parts"], batch["u"], batch["v"], config.uv_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([loss.detach(), part_loss.detach(), uv_loss.detach()]).cpu() * len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elapsed += time.perf_counter() - t0
        # Logged before the checkpoint: a kill in between re-runs this epoch, and the stage drops
        # the curves' rows from the resumed epoch on (reid.io.drop_live_steps_from).
        if on_epoch:
            mean = (sums / n).tolist()
            on_epoch(epoch, {"loss": mean[0], "part_loss": mean[1], "uv_loss": mean[2],
                             "lr": optimizer.param_groups[0]["lr"]})
        if checkpoint:
            save_checkpoint(checkpoint, model, optimizer, epoch + 1, fingerprint, elapsed)
    return model.eval(), elapsed


# --- held-out metrics (definitions in reid.densepose.quality) ---

def evaluate_lite(estimator: LiteEstimator, images: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float]:
    """Part mIoU (25 classes and 24 parts) and U/V error of the estimator's IUV against ground truth."""
    quality = IUVQuality()
    for result, gt in zip(estimator.predict(images, []), gts, strict=True):
        quality.update(result.iuv, gt)
    return quality.summary()
