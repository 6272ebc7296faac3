"""Image transforms (torchvision v2): train augmentation, eval resize, DSAP and texture tensors.

Randomness comes from torch's global RNG, which the trainer reseeds from (seed, epoch) at the
start of every epoch (and DataLoader workers derive their seeds from it), so augmentation is
reproducible and a resumed run replays it exactly.
"""

from __future__ import annotations

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
    """uint8 RGB [H, W, 3] -> float [3, *size] normalised: resize (+ random crop and flip when training)
    on the uint8 image, then one float conversion, then random erasing.

    The steps and their random draws are torchvision v2's — ``Compose([ToImage(), Resize(resize_to),
    RandomCrop(size), RandomHorizontalFlip(flip_p), ToDtype(float32, scale=True), Normalize, RandomErasing])``,
    the same kernels (`v2.functional.resize`, torchvision's RandomErasing) and the same draws from torch's RNG
    in the same order (tests/test_transforms.py checks the equality) — without the per-transform dispatch of a
    Compose, which cost more than the pixels at reID crop sizes (bench/bench_loader.py).
    """

    def __init__(self, size: tuple[int, int], resize_to: tuple[int, int] | None = None, *, train: bool = False,
                 flip_p: float = 0.5, erasing_p: float = 0.0) -> None:
        self.size, self.resize_to = tuple(size), tuple(resize_to or size)
        self.train, self.flip_p = train, flip_p
        self.erasing = v2.RandomErasing(p=erasing_p) if train and erasing_p > 0 else None

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        x = F.resize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), list(self.resize_to),
                     antialias=True)
        if self.train:
            (h, w), (rh, rw) = self.size, self.resize_to
            top = int(torch.randint(0, rh - h + 1, size=())) if rh > h else 0  # v2.RandomCrop's draws
            left = int(torch.randint(0, rw - w + 1, size=())) if rw > w else 0
            x = x[:, top:top + h, left:left + w]
            if torch.rand(1) < self.flip_p:  # v2.RandomHorizontalFlip draws on every call
                x = x.flip(-1)
        x = torch.addcmul(_SHIFT, x.contiguous().float(), _SCALE)  # (x / 255 - mean) / std in one pass
        return self.erasing(x) if self.erasing is not None else x


def train_transform(size: tuple[int, int], *, crop_scale: float = 1.125, flip_p: float = 0.5,
                    erasing_p: float = 0.5) -> ImageTransform:
    """uint8 RGB [H, W, 3] -> float [3, *size] normalised, with random crop, flip and erasing (SPEC §9).

    Random crop = resize to ``crop_scale`` x size, then crop back to size (no crop when scale is 1).
    Random erasing (torchvision's, zeros = the mean after normalisation) runs last, as in BoT.
    """
    h, w = size
    resize_to = (round(h * crop_scale), round(w * crop_scale)) if crop_scale > 1.0 else (h, w)
    return ImageTransform((h, w), resize_to, train=True, flip_p=flip_p, erasing_p=erasing_p)


def eval_transform(size: tuple[int, int]) -> ImageTransform:
    """uint8 RGB [H, W, 3] -> float [3, *size], resized and normalised."""
    return ImageTransform(size)


# The normalisation of a uint8 image as one multiply-add: x * _SCALE + _SHIFT = (x / 255 - mean) / std.
_SCALE = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(3, 1, 1))
_SHIFT = -torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def dsap_tensor(dsap: np.ndarray) -> torch.Tensor:
    """uint8 [24, S, S, 3] -> float [24, 3, S, S] with the image normalisation.

    Deliberately no flip, crop or erasing. A flipped crop keeps its unflipped DSAP (SPEC §2): the
    24 DSAG branches have their own conv1-conv3 weights up to the left/right merge, so a DSAP with
    left and right swapped would be a different input, not a mirrored one; pairing a flipped crop
    with the unflipped DSAP is consistent because the two streams meet only after pooling, where
    the MF-Stream's pooled feature is (nearly) flip-invariant. The DSAP grid is already aligned in
    UV, and erasing would blank whole semantic parts.
    """
    x = torch.from_numpy(np.array(dsap)).permute(0, 3, 1, 2).contiguous().float()
    return torch.addcmul(_SHIFT, x, _SCALE)


def texture_tensor(atlas: np.ndarray) -> torch.Tensor:
    """uint8 atlas [6T, 4T, 3] -> float [3, 6T, 4T] in [-1, 1] (the SAN reconstruction target, never augmented)."""
    return torch.from_numpy(np.array(atlas)).permute(2, 0, 1).contiguous().float().div_(127.5).sub_(1.0)
