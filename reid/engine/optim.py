"""Optimisers and LR schedules: Adam, wd 5e-4, linear warm-up, then x gamma every step_epochs (DSA §4.2;
the reID models, the pretraining, SAN-PG); per-step warm-up + cosine (the lite DensePose)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


class OptimSettings(Protocol):
    lr: float
    weight_decay: float
    amsgrad: bool
    warmup_epochs: int
    warmup_factor: float
    step_epochs: int
    gamma: float


def check_optim_settings(cfg: OptimSettings) -> None:
    """Config-time checks shared by every config that trains with this optimiser and schedule."""
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {cfg.lr}, {cfg.weight_decay}")
    if not 0 < cfg.warmup_factor <= 1 or not 0 < cfg.gamma <= 1:
        raise ValueError("warmup_factor and gamma must be in (0, 1]")
    if cfg.warmup_epochs < 0 or cfg.step_epochs < 1:
        raise ValueError(f"warmup_epochs must be >= 0 and step_epochs >= 1, got {cfg.warmup_epochs}, {cfg.step_epochs}")


def build_optimizer(model: nn.Module, cfg: OptimSettings, head_lr_mult: float = 1.0,
                    backbone: Iterable[nn.Parameter] = ()) -> torch.optim.Adam:
    """Adam over all trainable parameters (the paper applies decay everywhere): one group, or with
    `head_lr_mult` != 1 two, the `backbone` parameters at lr and everything else (necks, classifiers,
    added branches, decoders) at lr x head_lr_mult. The schedule scales both groups alike."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if head_lr_mult == 1.0:
        return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
    backbone_ids = {id(p) for p in backbone}
    groups = [{"params": [p for p in trainable if id(p) in backbone_ids], "lr": cfg.lr},
              {"params": [p for p in trainable if id(p) not in backbone_ids], "lr": cfg.lr * head_lr_mult}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay,
                            amsgrad=cfg.amsgrad)


def lr_factor(epoch: int, cfg: OptimSettings) -> float:
    """Multiplier of the base lr during 0-based `epoch`.

    Warm-up is per epoch, linear from `warmup_factor` (epoch 0: 8e-4 * 0.01 = 8e-6) to 1 at
    `warmup_epochs`; decay is x `gamma` at every multiple of `step_epochs` (40, 80, ... as in
    the SAN/BoT milestone lists), counted from epoch 0.
    """
    warm = 1.0
    if epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        warm = cfg.warmup_factor * (1.0 - alpha) + alpha
    return warm * cfg.gamma ** (epoch // cfg.step_epochs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSettings) -> LambdaLR:
    """Per-epoch LambdaLR: call ``step()`` once after each epoch."""
    return LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg))


def warmup_cosine_lr(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to 1% of base_lr, from the global step alone (resume-safe)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class WarmupCosineLR(LRScheduler):
    """Per-step `warmup_cosine_lr` (the lite DensePose's schedule): call ``step()`` after every
    optimiser step. It spans `total` steps, so a run's length is part of what it computes."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [warmup_cosine_lr(self.last_epoch, self.total, self.warmup, base) for base in self.base_lrs]
