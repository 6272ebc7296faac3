"""Running SAN-PG, and the texture L1s ([-1, 1] units, all atlas pixels and channels)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from reid.data.transforms import eval_transform, normalised_images
from reid.device import default_device
from reid.sanpg.config import SanPGConfig
from reid.sanpg.data import PitData, images_tensor, textures_tensor

L1_UNITS = "mean |x - y| over all atlas pixels and channels, textures in [-1, 1] (x / 127.5 - 1)"


@torch.no_grad()
def predict_textures(model: nn.Module, images: torch.Tensor, device: torch.device,
                     batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Float textures [b, 3, 6T, 4T] in [-1, 1] (on CPU) for uint8 images [N, H, W, 3], batch by batch."""
    model.eval().to(device)
    for i in range(0, len(images), batch_size):
        yield model(normalised_images(images[i:i + batch_size].to(device))).float().cpu()


def evaluate_l1(model: nn.Module, data: PitData, indices: np.ndarray, cfg: SanPGConfig) -> dict[str, float]:
    """SAN-PG's L1 over pairs `indices` (eval transform) and their count; the model's mode is kept."""
    device = default_device(cfg.device)
    images = images_tensor([data.images[i] for i in indices], eval_transform(cfg.arch().size))
    targets = textures_tensor(data.textures)
    total = 0.0
    was_training = model.training
    for start, pred in zip(range(0, len(indices), cfg.eval_batch_size),
                           predict_textures(model, images, device, cfg.eval_batch_size), strict=True):
        idx = indices[start:start + cfg.eval_batch_size]
        total += (pred - targets[data.texture_of[idx]]).abs().mean(dim=(1, 2, 3)).sum().item()
    model.train(was_training)
    return {"l1": total / max(len(indices), 1), "n": len(indices)}


def mean_texture_l1(mean: torch.Tensor, data: PitData, indices: np.ndarray) -> float:
    """L1 of the mean-texture predictor `mean` [3, 6T, 4T] over pairs `indices` (the floor to beat)."""
    return float((mean[None] - textures_tensor(data.targets(indices))).abs().mean())


def texture_l1(prediction: np.ndarray, target: np.ndarray) -> float:
    """L1 between two uint8 atlases (or float ones already in [-1, 1] when float)."""
    p = prediction.astype(np.float64) / 127.5 - 1 if prediction.dtype == np.uint8 else prediction.astype(np.float64)
    t = target.astype(np.float64) / 127.5 - 1 if target.dtype == np.uint8 else target.astype(np.float64)
    return float(np.abs(p - t).mean())
