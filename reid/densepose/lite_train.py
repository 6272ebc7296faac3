"""Training and held-out evaluation of the lite DensePose network (SPEC §5).

Data: the synthetic world's Market-layout export — crops in <split>/*.jpg with ground-truth IUV
in gt_iuv/<split>/<stem>.png (I, U, V in channel order as cv2 reads them). Training uses
bounding_box_train (pid > 0) and, when the world has them, the extra training-identity renders in
densepose_train/; metrics come from test identities (bounding_box_test, query) only.

Targets are soft: labels at 2x the heads' resolution (a 128 x 64 crop's own pixels for the
default 128 x 64 input) are pooled into per-cell part shares and per-part mean U/V
(``soft_targets``), so thin limbs keep their weight at the heads' coarser grid.

Training runs on the one loop (`reid.engine.loop.fit`): checkpoint, exact resumption and DVCLive
curves as for every network. The order, recolouring and box jitter of epoch e are drawn from a
generator seeded from (seed, e) alone (`epoch_generator`) and the learning rate is a function of the
global step (`reid.engine.optim.WarmupCosineLR`), so a run resumed from epoch e ends with the same
weights as an uninterrupted one (CPU, same seed).

No horizontal-flip augmentation: rendering a symmetric pose from azimuth a and -a shows that the
synthetic charts are not all mirror-consistent (torso V becomes 1 - V, the feet charts differ), so a
flip by label swap alone would teach wrong U/V.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from reid.data.datasets import DENSEPOSE_FOLDER, parse_market_name
from reid.densepose.agreement import Reference, reference_crop
from reid.densepose.base import read_iuv_png
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
from reid.device import check_device_settings
from reid.engine.artifacts import NetworkFolder
from reid.engine.loop import FitConfig, MappedBatches, TrainResult, fit, run_key
from reid.engine.optim import WarmupCosineLR
from reid.io import read_image
from reid.parts import N_CLASSES, N_PARTS, decode_iuv

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
    # Domain randomisation against the synthetic world's flat, sharp look (issue 24; 0: off, the stream
    # of draws is then that of before): the share of crops whose background becomes random clutter,
    # and of crops seen at a random lower resolution.
    background_p: float = 0.0
    low_res_p: float = 0.0
    # Weak supervision on real crops (issue 24): a body reference of real *training* crops
    # (scripts/mediapipe_reference.py; paths relative to weak_root). Each step adds weak_batch_size of
    # them, their person masks supervising body vs background (weight weak_weight); part labels still
    # come from the synthetic renders alone. null: off.
    weak_reference: str | None = None
    weak_root: str | None = None
    weak_batch_size: int = 8
    weak_weight: float = 1.0
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
        for name in ("epochs", "batch_size", "width", "eval_batch_size", "weak_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_threads", "max_train_images", "max_eval_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("background_p", "low_res_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.box_jitter < 0.5:
            raise ValueError(f"box_jitter must lie in [0, 0.5), got {self.box_jitter}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if (self.weak_reference is None) != (self.weak_root is None):
            raise ValueError("weak_reference and weak_root go together: set both or neither")
        if self.weak_weight <= 0:
            raise ValueError(f"weak_weight must be > 0, got {self.weak_weight}")
        self.arch().validate()
        check_device_settings(self.device)

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


def load_pairs(pairs: Sequence[tuple[Path, Path]], desc: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, iuvs = [], []
    for crop, gt in tqdm(pairs, desc=desc, unit="img"):
        image = read_image(crop)
        images.append(image)
        iuvs.append(read_iuv_png(gt, image.shape[:2]))
    return images, iuvs


LABEL_SUPERSAMPLE = 2  # label samples per head cell and axis, pooled into each batch's soft targets


def label_size(arch: LiteArch) -> tuple[int, int]:
    """(width, height), as cv2 takes it, of the training labels: LABEL_SUPERSAMPLE x the heads' size."""
    scale = LABEL_SUPERSAMPLE / OUTPUT_STRIDE
    return round(arch.input_width * scale), round(arch.input_height * scale)


def training_arrays(images: Sequence[np.ndarray], iuvs: Sequence[np.ndarray], arch: LiteArch) -> dict[str, torch.Tensor]:
    """Crops at the input size (uint8 [N,H,W,3]) and IUV labels at LABEL_SUPERSAMPLE x the heads' size
    (parts uint8, u/v float): 128 x 64 for a 128 x 64 input, a synthetic crop's own size.

    The loss pools the labels into soft targets at the heads' size (``soft_targets``).
    """
    x = resize_crops(images, arch.input_height, arch.input_width)  # exactly as at inference
    # Nearest keeps labels exact and U/V consistent with their label.
    t = np.stack([cv2.resize(iuv, label_size(arch), interpolation=cv2.INTER_NEAREST) for iuv in iuvs])
    parts, u, v = decode_iuv(t)
    return {"image": torch.from_numpy(x), "parts": torch.from_numpy(parts.astype(np.uint8)),
            "u": torch.from_numpy(u), "v": torch.from_numpy(v)}


def weak_arrays(references: Sequence[Reference], root: str | Path, arch: LiteArch) -> dict[str, torch.Tensor]:
    """Real crops at the input size (uint8 [N,H,W,3]) and their reference person masks at the labels' size
    (uint8 [N, h, w], 0 / 1; nearest), from a body reference (reid.densepose.agreement.read_reference)."""
    if not references:
        raise ValueError("the weak reference holds no crops")
    images = [reference_crop(ref, root) for ref in tqdm(references, desc="read weak", unit="img")]
    size = label_size(arch)
    masks = np.stack([cv2.resize(ref.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for ref in references])
    return {"image": torch.from_numpy(resize_crops(images, arch.input_height, arch.input_width)),
            "mask": torch.from_numpy(masks)}


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


def silhouette_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the background probability against a person mask ([B,H,W], an integer
    multiple of the heads' size, pooled into each cell's body share): body vs background only, as the
    decision `parts_and_uv` makes at inference (body where it is likelier than background)."""
    (h, w), (fh, fw) = logits.shape[-2:], mask.shape[-2:]
    share = F.avg_pool2d(mask.float()[:, None], (fh // h, fw // w))[:, 0]
    total = logits.logsumexp(1)
    background = logits[:, 0] - total  # log p(background)
    body = logits[:, 1:].logsumexp(1) - total  # log p(any part)
    return -((1 - share) * background + share * body).mean()


# --- training (on the one loop, reid.engine.loop) ---

def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of epoch `epoch` (order, recolouring, box jitter), from the seed and epoch alone.

    Kept from before the shared engine (which seeds torch's RNG from `epoch_seed`, unused here) so
    the default profile's lite DensePose, and the IUV and DSAP-images downstream, stay bit-identical.
    """
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def random_recolor(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Colour augmentation of a [0, 1] batch [B, 3, H, W]: per-sample channel shuffle, gains, offset.

    Labels do not depend on colour, and a few hundred training textures are easy to memorise.
    """
    b = x.shape[0]
    perm = torch.rand(b, 3, generator=generator).argsort(1).to(x.device)
    gain = (0.6 + 0.8 * torch.rand(b, 3, 1, 1, generator=generator)).to(x.device)
    offset = (0.2 * torch.rand(b, 1, 1, 1, generator=generator) - 0.1).to(x.device)
    x = x.gather(1, perm[:, :, None, None].expand_as(x))
    return (x * gain + offset).clamp(0.0, 1.0)


def muted_colours(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 3, 1, 1] colours: a grey level in [0.15, 0.85] with a tint of up to +-0.1 a channel (street scenes
    are mostly grey; saturated clutter would teach that colour means background)."""
    grey = 0.15 + 0.7 * torch.rand(n, 1, 1, 1, generator=generator)
    return grey + 0.2 * (torch.rand(n, 3, 1, 1, generator=generator) - 0.5)


def random_clutter(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """n random backgrounds [n, 3, H, W] in [0, 1]: muted 1/f^a noise (natural images' spectrum, a random
    slope a in [0.5, 2]: from gravel to cloud) under a few tinted rectangles (walls, doors, railings).

    The synthetic world's backgrounds are flat rectangles and its people textured; on real crops the
    lite DensePose then labels texture as body. Clutter behind the rendered body breaks that shortcut.
    """
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    freq = (fx**2 + fy**2).sqrt().clamp(min=1.0 / max(height, width))
    slope = 0.5 + 1.5 * torch.rand(n, 1, 1, 1, generator=generator)
    spectrum = torch.complex(torch.randn(n, 4, *freq.shape, generator=generator),
                             torch.randn(n, 4, *freq.shape, generator=generator)) * freq.pow(-slope)
    fields = torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1))
    fields = (fields - fields.mean((-2, -1), keepdim=True)) / fields.std((-2, -1), keepdim=True).clamp(min=1e-6)
    noise = fields[:, :1] + 0.15 * fields[:, 1:]  # mostly one grey field, a little colour per channel
    base = muted_colours(n, generator)
    contrast = 0.05 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    out = base + contrast * noise
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    extent = torch.tensor([height, width]).view(2, 1, 1, 1)
    for _ in range(3):
        y0, x0 = torch.rand(2, n, 1, 1, generator=generator) * extent
        hh, ww = torch.rand(2, n, 1, 1, generator=generator) * extent / 2
        inside = ((rows >= y0) & (rows < y0 + hh) & (cols >= x0) & (cols < x0 + ww))[:, None]
        tint = muted_colours(n, generator)
        out = torch.where(inside, tint + 0.5 * contrast * noise, out)
    return out.clamp(0.0, 1.0)


def random_backgrounds(x: torch.Tensor, parts: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """x [B,3,H,W] with the background (part 0 of `parts`, any integer multiple of x's size) of a random
    share p of the samples replaced by `random_clutter`."""
    b, _, h, w = x.shape
    chosen = torch.rand(b, generator=generator) < p
    clutter = random_clutter(b, h, w, generator).to(x.device)
    body = F.interpolate((parts > 0).float()[:, None], size=(h, w), mode="nearest").bool()
    keep = body | ~chosen.to(x.device)[:, None, None, None]
    return torch.where(keep, x, clutter)


def random_low_resolution(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """x [B,3,H,W] with a random share p of the samples down-sampled by 1.5-3x (area) and back (bilinear):
    real crops are often upscaled from fewer pixels than their size."""
    b, _, h, w = x.shape
    chosen = torch.rand(b, generator=generator) < p
    factor = 1.5 + 1.5 * torch.rand(b, generator=generator)
    out = x.clone()
    for i in chosen.nonzero().flatten().tolist():
        size = (max(1, round(h / factor[i].item())), max(1, round(w / factor[i].item())))
        small = F.interpolate(x[i:i + 1], size=size, mode="area")
        out[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


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


def data_digest(data: dict[str, torch.Tensor]) -> str:
    """sha1 over the training arrays: a checkpoint is resumed only on the same data."""
    digest = hashlib.sha1()
    for key in sorted(data):
        digest.update(data[key].numpy().tobytes())
    return digest.hexdigest()


# Settings that do not change what an epoch computes. `epochs` is NOT among them: the cosine
# schedule spans the whole run, so a longer run is another run (raising it retrains).
RUN_KEY_EXEMPT = ("device", "num_threads", "eval_batch_size", "max_eval_images")


class LiteTask:
    """The lite DensePose for `reid.engine.loop.fit`: shuffled, recoloured (then, when on, cluttered and
    low-resolution), box-jittered batches of `data` (from training_arrays), part cross-entropy + U/V L1,
    AdamW with per-step warm-up + cosine."""

    def __init__(self, model: LiteDensePose, data: dict[str, torch.Tensor], config: TrainDensePoseConfig,
                 weak: dict[str, torch.Tensor] | None = None) -> None:
        self.model, self.data, self.config, self.weak = model, data, config, weak
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        n = len(data["image"])
        self.steps_per_epoch = math.ceil(n / config.batch_size)
        total = self.steps_per_epoch * config.epochs
        self.scheduler = WarmupCosineLR(self.optimizer, total, max(1, round(config.warmup_epochs * self.steps_per_epoch)))

    def batches(self, epoch: int) -> MappedBatches:
        generator = epoch_generator(self.config.seed, epoch)
        order = torch.randperm(len(self.data["image"]), generator=generator)
        size = self.config.batch_size

        def make(i: int) -> dict[str, torch.Tensor]:  # drawn in batch order: the generator's stream is fixed
            batch = {k: t[order[i * size:(i + 1) * size]] for k, t in self.data.items()}
            x = to_input(batch["image"], "cpu", lambda pixels: self.pixel_augment(pixels, batch["parts"], generator))
            if self.config.box_jitter > 0:
                x, targets = random_box_jitter(batch, x, self.config.box_jitter, generator)
                batch.update(targets)
            if self.weak is not None:  # drawn after the synthetic batch: off, the stream is that of before
                batch.update(self.weak_batch(generator))
            return {**batch, "image": x}

        return MappedBatches(range(self.steps_per_epoch), make)

    def pixel_augment(self, x: torch.Tensor, parts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The [0, 1] batch recoloured, then cluttered and at a lower resolution where the config says so."""
        if self.config.recolor:
            x = random_recolor(x, generator)
        if self.config.background_p > 0:
            x = random_backgrounds(x, parts, self.config.background_p, generator)
        if self.config.low_res_p > 0:
            x = random_low_resolution(x, self.config.low_res_p, generator)
        return x

    def weak_batch(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """weak_batch_size random real crops (recoloured like the renders, mirrored at random) and their masks."""
        pick = torch.randint(len(self.weak["image"]), (self.config.weak_batch_size,), generator=generator)
        mirror = torch.rand(len(pick), generator=generator) < 0.5  # a mask, unlike U/V, mirrors exactly
        images, masks = self.weak["image"][pick].clone(), self.weak["mask"][pick].clone()
        images[mirror], masks[mirror] = images[mirror].flip(2), masks[mirror].flip(2)
        recolor = (lambda pixels: random_recolor(pixels, generator)) if self.config.recolor else None
        return {"weak_image": to_input(images, "cpu", recolor), "weak_mask": masks}

    def loss_terms(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Real crops go through the same forward pass as the renders, so batch norm normalises every step
        # over both domains (a second pass alternated its statistics between them: the renders' held-out
        # part mIoU fell to 0.21 against 0.29 with one pass; 0.66 without real crops, README).
        n = len(batch["image"])
        images = torch.cat([batch["image"], batch["weak_image"]]) if "weak_image" in batch else batch["image"]
        logits, uv = net(images)
        _, part_loss, uv_loss = lite_loss(logits[:n], uv[:n], batch["parts"], batch["u"], batch["v"],
                                          self.config.uv_weight)
        terms = {"part": part_loss, "uv": self.config.uv_weight * uv_loss}
        if "weak_image" in batch:
            terms["silhouette"] = self.config.weak_weight * silhouette_loss(logits[n:], batch["weak_mask"])
        return terms


def train_lite(config: TrainDensePoseConfig, data: dict[str, torch.Tensor],
               folder: NetworkFolder | None = None,
               weak: dict[str, torch.Tensor] | None = None) -> tuple[LiteDensePose, TrainResult]:
    """Train on `data` (from training_arrays) and, when given, the real crops and masks `weak` (from
    weak_arrays); returns (model in eval mode, the run's TrainResult).

    With `folder`, resumes from ``folder.checkpoint`` when it matches the config and data, rewrites it
    every epoch, and logs the curves to ``folder.curves``.
    """
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)  # the same initial weights on every (re)start
    model = build_model(config.arch())
    fit_cfg = FitConfig(epochs=config.epochs, seed=config.seed, device=config.device, schedule="step",
                        desc="lite densepose epoch")
    digest = data_digest(data) + (f"|weak={data_digest(weak)}" if weak is not None else "")
    key = run_key(config, exempt=RUN_KEY_EXEMPT, data=digest)
    result = fit(LiteTask(model, data, config, weak), fit_cfg, key=key,
                 checkpoint_dir=folder.checkpoint if folder else None, live_dir=folder.curves if folder else None)
    return model.eval(), result


# --- held-out metrics (definitions in reid.densepose.quality) ---

def evaluate_lite(estimator: LiteEstimator, images: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float]:
    """Part mIoU (25 classes and 24 parts) and U/V error of the estimator's IUV against ground truth."""
    quality = IUVQuality()
    for result, gt in zip(estimator.predict(images, []), gts, strict=True):
        quality.update(result.iuv, gt)
    return quality.summary()
