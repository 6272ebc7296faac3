"""Image transforms: per sample a uint8 resize (torchvision v2's kernel); per batch, on the batch's device,
the float conversion and the training augmentation (torchvision v2's draws).

The datasets yield uint8 pictures in the layout they are decoded in, [..., H, W, 3]: the crop [H, W, 3]
resized (`ImageTransform`; for training to the size a random crop is cut from), the DSAP images
[24, S, S, 3], the texture atlas [6T, 4T, 3]. `model_inputs` turns a batch of them into the models' float
[B, ..., 3, H, W] inputs where the batch is (the GPU when training on one), and `BatchAugment` then crops,
flips and erases the images of a training batch there. A loader worker thus only decodes, resizes and
copies bytes: a quarter of the float samples' bytes to collate, pin and move, no per-sample float pass or
per-sample augmentation (bench/bench_loader.py), and a stacked [B, H, W, 3] batch is already the
channels-last layout the engine runs convolutions in.

Randomness comes from torch's global RNG, which the trainer reseeds from (seed, epoch) at the start of every
epoch: `BatchAugment` draws on the CPU in the main process, sample after sample, so augmentation is
reproducible, a resumed run replays it exactly, and it does not depend on the device or the workers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_augment_settings(crop_scale: float, flip_p: float, erasing_p: float) -> None:
    """Config-time checks of train_transform's knobs (every training config has them)."""
    if crop_scale < 1:
        raise ValueError(f"crop_scale must be >= 1, got {crop_scale}")
    for name, p in (("flip_p", flip_p), ("erasing_p", erasing_p)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")


class ImageTransform:
    """uint8 RGB [H, W, 3] -> uint8 [*size, 3], resized by torchvision v2's kernel (`v2.functional.resize`,
    bilinear, antialiased) on a [C, H, W] view of the [H, W, 3] memory, which it keeps channels-last."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = tuple(size)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        source = torch.from_numpy(np.ascontiguousarray(image))
        x = source.permute(2, 0, 1)
        if (x.shape[1], x.shape[2]) != self.size:
            x = F.resize(x, list(self.size), antialias=True)
        out = x.permute(1, 2, 0).contiguous()
        if out.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():  # never alias the input
            out = out.clone()
        return out


def eval_transform(size: tuple[int, int]) -> ImageTransform:
    """uint8 RGB [H, W, 3] -> uint8 [*size, 3], resized."""
    return ImageTransform(size)


def crop_source_size(size: tuple[int, int], crop_scale: float) -> tuple[int, int]:
    """The size a random crop of `size` is cut from: `size` x `crop_scale` (`size` itself at scale 1)."""
    h, w = size
    return (round(h * crop_scale), round(w * crop_scale)) if crop_scale > 1.0 else (h, w)


def train_transform(size: tuple[int, int], *, crop_scale: float = 1.125) -> ImageTransform:
    """The per-sample half of training augmentation: uint8 RGB [H, W, 3] -> uint8 [*crop_source_size, 3];
    `BatchAugment` (of the same size and scale) does the rest on the batch."""
    return ImageTransform(crop_source_size(size, crop_scale))


class BatchAugment:
    """Random crop, flip and erasing of a training batch of normalised images [B, 3, rh, rw] -> [B, 3, *size],
    on the batch's device (SPEC §9).

    Each sample gets exactly torchvision v2's ``RandomCrop(size)``, ``RandomHorizontalFlip(flip_p)`` and
    ``RandomErasing(erasing_p)`` (value 0: the mean colour once normalised, after normalisation as in BoT):
    the same draws from torch's RNG, made on the CPU sample after sample in those transforms' order
    (RandomErasing's own `make_params` for the box), then applied as slice copies into one channels-last
    batch (tests/test_transforms.py checks the equality with the composed per-sample pipeline; slices
    measured 4x faster than one advanced-indexing gather on the CPU). Random crop =
    resize to `crop_source_size` (`train_transform`, per sample), then crop back to `size`.
    """

    def __init__(self, size: tuple[int, int], *, crop_scale: float = 1.125, flip_p: float = 0.5,
                 erasing_p: float = 0.5) -> None:
        check_augment_settings(crop_scale, flip_p, erasing_p)
        self.size, self.source = tuple(size), crop_source_size(size, crop_scale)
        self.flip_p = flip_p
        self.erasing = v2.RandomErasing(p=erasing_p) if erasing_p > 0 else None
        self._shape = torch.empty(3, *self.size)  # what RandomErasing.make_params reads the image size from

    def draws(self) -> tuple[int, int, bool, tuple[int, int, int, int] | None]:
        """One sample's (top, left, flip, erased box (i, j, h, w) or None)."""
        (h, w), (rh, rw) = self.size, self.source
        top = int(torch.randint(0, rh - h + 1, size=())) if rh > h else 0  # v2.RandomCrop's draws
        left = int(torch.randint(0, rw - w + 1, size=())) if rw > w else 0
        flip = bool(torch.rand(1) < self.flip_p)  # v2.RandomHorizontalFlip draws on every call
        box = None
        if self.erasing is not None and torch.rand(1) < self.erasing.p:  # v2's _RandomApplyTransform draw
            params = self.erasing.make_params([self._shape])
            if params["v"] is not None:  # no box found in 10 tries: unchanged, as torchvision
                box = (params["i"], params["j"], params["h"], params["w"])
        return top, left, flip, box

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, _, rh, rw = images.shape
        if (rh, rw) != self.source:
            raise ValueError(f"BatchAugment: images are {rh}x{rw}, a random crop of {self.size} at this scale is cut "
                             f"from {self.source[0]}x{self.source[1]} (reid.data.transforms.train_transform)")
        (h, w) = self.size
        out = torch.empty((b, images.shape[1], h, w), dtype=images.dtype, device=images.device,
                          memory_format=torch.channels_last)
        for k in range(b):
            top, left, flip, box = self.draws()
            crop = images[k, :, top:top + h, left:left + w]
            out[k] = crop.flip(-1) if flip else crop
            if box is not None:
                i, j, bh, bw = box
                out[k, :, i:i + bh, j:j + bw] = 0.0
        return out


# The normalisation of a uint8 image as a multiply-add: x * _SCALE + _SHIFT = (x / 255 - mean) / std.
_SCALE = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(3, 1, 1))
_SHIFT = -torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _normalised(chw: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32, ImageNet-normalised: in-place multiply and add, 3x faster on the CPU
    than one broadcast addcmul."""
    return chw.float().mul_(_SCALE.to(chw.device)).add_(_SHIFT.to(chw.device))


def normalised_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W], ImageNet-normalised, on the images' device (from a
    [B, H, W, 3] batch: channels-last memory, which elementwise ops keep)."""
    return _normalised(images.movedim(-1, -3))


def dsap_inputs(dsap: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 24, S, S, 3] -> float [B, 24, 3, S, S] with the image normalisation.

    Deliberately no flip, crop or erasing. A flipped crop keeps its unflipped DSAP (SPEC §2): the
    24 DSAG branches have their own conv1-conv3 weights up to the left/right merge, so a DSAP with
    left and right swapped would be a different input, not a mirrored one; pairing a flipped crop
    with the unflipped DSAP is consistent because the two streams meet only after pooling, where
    the MF-Stream's pooled feature is (nearly) flip-invariant. The DSAP grid is already aligned in
    UV, and erasing would blank whole semantic parts.
    """
    # contiguous before the arithmetic: the DSAG-Stream stacks the 24 parts' channels anyway
    return _normalised(dsap.movedim(-1, -3).contiguous())


def texture_inputs(atlas: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 6T, 4T, 3] -> float [..., 3, 6T, 4T] in [-1, 1] (the SAN reconstruction target, never augmented)."""
    return atlas.float().div_(127.5).sub_(1.0).movedim(-1, -3)


_TO_FLOAT = {"image": normalised_images, "dsap": dsap_inputs, "texture": texture_inputs}  # uint8 HWC -> float CHW


def model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of the datasets' uint8 samples -> the models' float inputs, on the batch's device: ``image``
    [B, H, W, 3] -> [B, 3, H, W] and ``dsap`` [B, 24, S, S, 3] -> [B, 24, 3, S, S] ImageNet-normalised,
    ``texture`` [B, 6T, 4T, 3] -> [B, 3, 6T, 4T] in [-1, 1].
    Everything else passes as it is: labels, indices, and floats a task made itself (the lite DensePose's
    recoloured crops)."""
    return {key: _TO_FLOAT[key](x) if key in _TO_FLOAT and x.dtype == torch.uint8 else x for key, x in batch.items()}
