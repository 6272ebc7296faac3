"""The `lite` IUV backend: a small fully convolutional DensePose-style network (SPEC §5).

A light U-Net maps a person crop, resized to a fixed input size, to 25-way part logits and
per-part U, V regressions (24 + 24 channels) at half the input resolution. Inference resizes
the logits bilinearly to the crop size, marks a pixel as body where the body is likelier than
the background and gives it its most likely part (DensePose's coarse/fine split), reads U/V from that part's
channel (clamped to [0, 1]) and encodes the result with reid.parts.encode_iuv.

Training (loss, loop, held-out metrics) lives in reid.densepose.lite_train.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from reid.densepose.base import IUVResult
from reid.engine.artifacts import NetworkFolder, read_info, save_network
from reid.parts import N_CLASSES, N_PARTS, encode_iuv

# ImageNet statistics: a conventional, harmless normalisation for random-init nets too.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDE = 2  # the heads run at half the input resolution


@dataclass
class LiteArch:
    """What is needed to rebuild the network: stored beside its weights as JSON."""

    width: int = 16
    input_height: int = 128
    input_width: int = 64

    def validate(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        if self.input_height % 16 or self.input_width % 16 or self.input_height < 16 or self.input_width < 16:
            raise ValueError("input_height and input_width must be positive multiples of 16, "
                             f"got {self.input_height}x{self.input_width}")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Up(nn.Module):
    """Bilinear x2, concatenate the skip, two 3x3 convs."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(_conv(cin + cskip, cout), _conv(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class LiteDensePose(nn.Module):
    """Light U-Net: strides 2/4/8/16 encoder + pooled context, decoder back to stride 2, two 1x1 heads.

    forward(x [B,3,H,W]) -> (part logits [B,25,H/2,W/2], uv [B,2,24,H/2,W/2]); uv[:,0] is U, uv[:,1] is V,
    channel k is part k+1.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_conv(3, w, 2), _conv(w, w))  # /2
        self.enc2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))  # /4
        self.enc3 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))  # /8
        self.enc4 = nn.Sequential(_conv(4 * w, 8 * w, 2), _conv(8 * w, 8 * w))  # /16
        # Image-level context: which way the person faces decides front/back and left/right labels
        # everywhere, so every position gets the pooled whole-crop feature.
        self.context = nn.Sequential(nn.Conv2d(8 * w, 8 * w, 1), nn.ReLU(inplace=True))
        self.up3 = _Up(8 * w, 4 * w, 4 * w)
        self.up2 = _Up(4 * w, 2 * w, 2 * w)
        self.up1 = _Up(2 * w, w, 2 * w)
        self.parts = nn.Conv2d(2 * w, N_CLASSES, 1)
        self.uv = nn.Conv2d(2 * w, 2 * N_PARTS, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.enc1(x.contiguous(memory_format=torch.channels_last))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        e4 = e4 + self.context(e4.mean((2, 3), keepdim=True))
        d = self.up3(e4, e3)
        d = self.up2(d, e2)
        d = self.up1(d, e1)
        uv = self.uv(d)
        return self.parts(d), uv.view(uv.shape[0], 2, N_PARTS, *uv.shape[-2:])


def build_model(arch: LiteArch) -> LiteDensePose:
    """The network in channels-last layout: ~1.2x faster convolutions on CPU (oneDNN), harmless on CUDA."""
    arch.validate()
    return LiteDensePose(arch.width).to(memory_format=torch.channels_last)


def resize_crops(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """uint8 [B, height, width, 3] from RGB crops of any size (area when shrinking, linear otherwise)."""
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"crop {i}: expected RGB uint8 [H, W, 3], got {image.dtype} {image.shape}")
        shrink = image.shape[0] >= height and image.shape[1] >= width
        out[i] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def to_input(batch: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
             recolor: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Normalised float [B, 3, H, W] on `device` from uint8 [B, H, W, 3].

    `recolor` (training augmentation) maps the [0, 1] float batch before normalisation.
    """
    x = torch.as_tensor(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if recolor is not None:
        x = recolor(x)
    mean = torch.tensor(_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def parts_and_uv(logits: torch.Tensor, uv: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """(parts long [B,h,w], U, V float [B,h,w] in [0,1]) at `size`, DensePose style.

    Logits and U/V are resized bilinearly. As DensePose splits coarse (person or not) from fine
    (which part) segmentation, a pixel is foreground when the body as a whole is likelier than
    the background, and then takes its most likely part: a plain 25-way argmax would hand a
    limb's edge, where the body's probability is split over two parts, to the background.
    U/V come from the part's channel (0 on background, where encode_iuv zeroes them anyway).
    """
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    b, _, n, h, w = uv.shape
    uv = F.interpolate(uv.reshape(b, 2 * n, h, w), size=size, mode="bilinear", align_corners=False)
    uv = uv.view(b, 2, n, *size)
    body = logits[:, 0] < logits[:, 1:].logsumexp(1)  # P(background) < 1/2
    parts = (logits[:, 1:].argmax(1) + 1) * body
    index = (parts - 1).clamp(min=0)[:, None, None].expand(b, 2, 1, *size)
    u, v = uv.gather(2, index)[:, :, 0].clamp(0.0, 1.0).unbind(1)
    return parts, u, v


class LiteEstimator:
    """IUVEstimator for the lite network: batched inference, IUV at each crop's own size."""

    def __init__(self, model: LiteDensePose, arch: LiteArch, device: torch.device, batch_size: int = 64,
                 progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.arch = arch
        self.device = device
        self.batch_size = batch_size
        self.progress = progress

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[IUVResult]:
        """IUV for each RGB uint8 crop (paths unused: the network only looks at pixels)."""
        results: list[IUVResult] = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="lite densepose", unit="batch", disable=not self.progress or len(starts) < 2):
            chunk = images[start:start + self.batch_size]
            batch = resize_crops(chunk, self.arch.input_height, self.arch.input_width)
            logits, uv = self.model(to_input(batch, self.device))
            results.extend(self._decode(logits, uv, [crop.shape[:2] for crop in chunk]))
        return results

    def _decode(self, logits: torch.Tensor, uv: torch.Tensor, sizes: list[tuple[int, int]]) -> list[IUVResult]:
        """IUV results in input order; crops of one size are resized and decoded together."""
        out: list[IUVResult | None] = [None] * len(sizes)
        for size in dict.fromkeys(sizes):
            idx = [i for i, s in enumerate(sizes) if s == size]
            parts, u, v = (t.cpu().numpy() for t in parts_and_uv(logits[idx], uv[idx], size))
            for j, i in enumerate(idx):
                out[i] = IUVResult(iuv=encode_iuv(parts[j], u[j], v[j]), found=bool((parts[j] > 0).any()))
        return out


LITE_FORMAT = "reid-densepose-lite/v1"  # model.json's "format"; "arch" holds the LiteArch


def save_lite_model(model: LiteDensePose, arch: LiteArch, folder: str | Path) -> None:
    """The network folder (`reid.engine.artifacts`): model.pt (weights, tensors only) and model.json
    (the architecture), both atomic."""
    save_network(NetworkFolder.at(folder), model.state_dict(),
                 {"format": LITE_FORMAT, "arch": asdict(arch)})


def load_lite_model(folder: str | Path) -> tuple[LiteDensePose, LiteArch]:
    """(model, architecture) from a network folder written by `save_lite_model`; errors name the file."""
    files = NetworkFolder.at(folder)
    if not files.model.is_file():
        raise FileNotFoundError(f"lite DensePose model not found: {files.model} (run the train_densepose stage)")
    info = read_info(files.info, LITE_FORMAT)
    try:
        arch = LiteArch(**info["arch"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{files.info}: not a lite DensePose architecture ({err})") from None
    model = build_model(arch)
    model.load_state_dict(torch.load(files.model, map_location="cpu", weights_only=True))
    return model, arch


def load_lite_estimator(folder: str | Path, device: torch.device | str = "cpu",
                        batch_size: int = 64) -> LiteEstimator:
    """The trained lite estimator from its network folder (model.pt + model.json), ready on `device`."""
    model, arch = load_lite_model(folder)
    return LiteEstimator(model, arch, torch.device(device), batch_size)
