"""Image transforms (torchvision v2): train augmentation, eval resize, DSAP and texture tensors.

Randomness comes from torch's global RNG, which the trainer reseeds from (seed, epoch) at the
start of every epoch (and DataLoader workers derive their seeds from it), so augmentation is
reproducible and a resumed run replays it exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_float() -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def check_augment_settings(crop_scale: float, flip_p: float, erasing_p: float) -> None:
    """Config-time checks of train_transform's knobs (every training config has them)."""
    if crop_scale < 1:
        raise ValueError(f"crop_scale must be >= 1, got {crop_scale}")
    for name, p in (("flip_p", flip_p), ("erasing_p", erasing_p)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")


def train_transform(size: tuple[int, int], *, crop_scale: float = 1.125, flip_p: float = 0.5,
                    erasing_p: float = 0.5) -> v2.Compose:
    """uint8 RGB [H, W, 3] -> float [3, *size] normalised, with random crop, flip and erasing (SPEC §9).

    Random crop = resize to ``crop_scale`` x size, then crop back to size (no crop when scale is 1).
    Random erasing (torchvision's, zeros = the mean after normalisation) runs last, as in BoT.
    """
    h, w = size
    steps: list[v2.Transform] = [*_to_float(), v2.Resize((h, w), antialias=True)]
    if crop_scale > 1.0:
        steps = [*_to_float(), v2.Resize((round(h * crop_scale), round(w * crop_scale)), antialias=True),
                 v2.RandomCrop((h, w))]
    steps += [v2.RandomHorizontalFlip(flip_p), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if erasing_p > 0:
        steps.append(v2.RandomErasing(p=erasing_p))
    return v2.Compose(steps)


def eval_transform(size: tuple[int, int]) -> v2.Compose:
    """uint8 RGB [H, W, 3] -> float [3, *size], resized and normalised."""
    return v2.Compose([*_to_float(), v2.Resize(size, antialias=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def dsap_tensor(dsap: np.ndarray) -> torch.Tensor:
    """uint8 [24, S, S, 3] -> float [24, 3, S, S] with the image normalisation.

    Deliberately no flip, crop or erasing. A flipped crop keeps its unflipped DSAP (SPEC §2): the
    24 DSAG branches have their own conv1-conv3 weights up to the left/right merge, so a DSAP with
    left and right swapped would be a different input, not a mirrored one; pairing a flipped crop
    with the unflipped DSAP is consistent because the two streams meet only after pooling, where
    the MF-Stream's pooled feature is (nearly) flip-invariant. The DSAP grid is already aligned in
    UV, and erasing would blank whole semantic parts.
    """
    x = torch.from_numpy(np.array(dsap)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - _MEAN) / _STD


def texture_tensor(atlas: np.ndarray) -> torch.Tensor:
    """uint8 atlas [6T, 4T, 3] -> float [3, 6T, 4T] in [-1, 1] (the SAN reconstruction target, never augmented)."""
    return torch.from_numpy(np.array(atlas)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
