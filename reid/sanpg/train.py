"""Training SAN-PG with `reid.engine.loop.fit` (L1 to the true atlas), and its held-out summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reid.data.transforms import BatchAugment, train_transform
from reid.engine.loop import Batch, FitConfig, MappedBatches, TrainResult, fit, run_key
from reid.engine.optim import build_optimizer, build_scheduler
from reid.sanpg.config import SanPGConfig
from reid.sanpg.data import PitData, images_tensor
from reid.sanpg.inference import L1_UNITS, evaluate_l1, mean_texture_l1
from reid.sanpg.model import build_sanpg

# Settings that do not change what an epoch computes; the data enters the run key via its digest.
RUN_KEY_EXEMPT = ("epochs", "device", "eval_batch_size", "n_samples", "pit_root")


def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (the reconstruction loss; [-1, 1] units)."""
    return (prediction - target).abs().mean()


def initial_model(cfg: SanPGConfig) -> nn.Module:
    """The untrained network, seeded from ``cfg.seed``: the same initial weights on every (re)start."""
    torch.manual_seed(cfg.seed)
    return build_sanpg(cfg.arch(), cfg.pretrained, cfg.decoder_init)


class SanPGTask:
    """Shuffled training pairs in batches of ``cfg.batch_size``, L1 to their atlas (`reid.engine.loop.Task`)."""

    def __init__(self, model: nn.Module, data: PitData, train_idx: np.ndarray, cfg: SanPGConfig) -> None:
        self.model, self.data, self.train_idx, self.cfg = model, data, train_idx, cfg
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.transform = train_transform(cfg.arch().size, crop_scale=cfg.crop_scale)
        self.augment = BatchAugment(cfg.arch().size, crop_scale=cfg.crop_scale, flip_p=cfg.flip_p,
                                    erasing_p=cfg.erasing_p)
        self.targets = torch.from_numpy(data.textures)  # uint8 [M, 6T, 4T, 3], indexed per batch

    def batches(self, epoch: int) -> MappedBatches:
        # torch's RNG was just seeded for this epoch by `fit`: the shuffle, then (lazily, batch by
        # batch) the augmentation draw from it.
        order = self.train_idx[torch.randperm(len(self.train_idx)).numpy()]
        size = self.cfg.batch_size
        return MappedBatches([order[i:i + size] for i in range(0, len(order), size)], self.batch)

    def batch(self, indices: np.ndarray) -> Batch:
        """The augmented person images of pairs `indices` and their (never augmented) atlases, uint8 (the engine
        makes the floats: reid.data.transforms.model_inputs)."""
        return {"image": images_tensor([self.data.images[i] for i in indices], self.transform),
                "texture": self.targets[self.data.texture_of[indices]]}

    def loss_terms(self, net: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return {"l1": l1(net(self.augment(batch["image"])), batch["texture"])}


def fit_config(cfg: SanPGConfig) -> FitConfig:
    return FitConfig(epochs=cfg.epochs, seed=cfg.seed, device=cfg.device, amp="off", desc="SAN-PG epoch")


def train_sanpg(model: nn.Module, data: PitData, train_idx: np.ndarray, held_idx: np.ndarray, cfg: SanPGConfig,
                checkpoint_dir: str | Path | None = None, *, live_dir: str | Path | None = None) -> TrainResult:
    """Train `model` in place on pairs `train_idx`; resume from ``checkpoint_dir/last.pt`` when it matches.

    Curves per epoch (DVCLive in `live_dir`): loss, loss_l1, lr and heldout_l1 (pairs `held_idx`).
    """
    key = run_key(cfg, exempt=RUN_KEY_EXEMPT, data=data.digest)
    return fit(SanPGTask(model, data, train_idx, cfg), fit_config(cfg), checkpoint_dir=checkpoint_dir, key=key,
               live_dir=live_dir, evaluate=lambda: {"heldout_l1": evaluate_l1(model, data, held_idx, cfg)["l1"]})


def heldout_summary(model: nn.Module, data: PitData, train_idx: np.ndarray, held_idx: np.ndarray,
                    cfg: SanPGConfig, mean: torch.Tensor, result: TrainResult) -> dict[str, Any]:
    """metrics/sanpg.json: the trained model's held-out L1 beside the mean training texture's `mean`
    (the floor to beat), the last epoch's train L1 and the split's sizes; no timings."""
    final = evaluate_l1(model, data, held_idx, cfg)["l1"]
    floor = mean_texture_l1(mean, data, held_idx)
    train_l1 = result.metrics.get("loss_l1")
    return {
        "units": L1_UNITS,
        "heldout_l1": round(final, 5), "heldout_l1_mean_texture": round(floor, 5),
        "heldout_gain_over_mean_texture": round(1 - final / floor, 4),
        "train_l1": round(train_l1, 5) if train_l1 is not None else None,
        "n_train_pairs": len(train_idx), "n_heldout_pairs": len(held_idx),
        "n_train_textures": len(np.unique(data.texture_of[train_idx])),
        "n_heldout_textures": len(np.unique(data.texture_of[held_idx])),
        "epochs": cfg.epochs,
    }
