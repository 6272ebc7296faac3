"""Training the reID models (SPEC §9) on the one loop of `reid.engine.loop`: P x K batches from the
train split, the model's own loss terms, Adam + warm-up/step LR, AMP and channels-last on CUDA,
DDP under torchrun, a checkpoint every epoch with exact resumption, DVCLive per-epoch metrics.

The model follows the engine interface: ``model.inputs`` (extra batch keys), ``model(batch) ->
outputs``, ``model.losses(outputs, batch) -> {name: weighted term}`` whose sum is minimised.
The sampler plans from (seed, epoch), and `fit` seeds torch's RNG from (seed, epoch, rank), so
epoch e draws the same crops, flips, erasures and batches whether or not the run was interrupted.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from reid.data.samplers import PKSampler
from reid.data.transforms import BatchAugment, check_augment_settings
from reid.device import AmpMode, check_device_settings
from reid.engine import distributed
from reid.engine.artifacts import epoch_losses, timing_record, train_record
from reid.engine.loop import Batch, FitConfig, TrainResult, fit, run_key
from reid.engine.optim import build_optimizer, build_scheduler, check_optim_settings
from reid.modeling.backbone import backbone_parameters


@dataclass
class TrainConfig:
    """Engine knobs (params.yaml section ``train``); defaults are the paper's (DSA §4.2)."""

    epochs: int = 320
    p: int = 16  # identities per batch (per rank under DDP)
    k: int = 4  # images per identity
    lr: float = 8e-4
    # lr x this for what the backbone does not own (necks, classifiers, added branches, decoders): a
    # pretrained trunk fine-tuned gently while its new heads learn fast (reid.engine.optim.build_optimizer)
    head_lr_mult: float = 1.0
    weight_decay: float = 5e-4
    amsgrad: bool = False  # SAN's official optimiser is AMSGrad
    warmup_epochs: int = 20
    warmup_factor: float = 0.01  # warm-up starts at lr * warmup_factor
    step_epochs: int = 40  # lr x gamma at every multiple of step_epochs
    gamma: float = 0.5
    height: int = 256
    width: int = 128
    crop_scale: float = 1.125  # random crop = resize x crop_scale, crop back (1 = off)
    flip_p: float = 0.5
    erasing_p: float = 0.5
    seed: int = 0
    num_workers: int = 2
    max_batches_per_epoch: int = 0  # 0 = the whole P x K plan; > 0 caps it (small CPU profiles)
    device: str = "auto"
    amp: AmpMode = "auto"  # auto: CUDA only (bf16 where supported); bf16 also on CPU
    channels_last: bool = True  # CUDA, and the CPU in fp32 (reid.device.memory_format)

    def validate(self) -> None:
        for name in ("epochs", "height", "width", "step_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # With one identity (or one image each) a batch has no negative (or no positive): the
        # batch-hard triplet loss would be silently 0.
        if self.p < 2:
            raise ValueError(f"p must be >= 2 (batch-hard triplet needs >= 2 identities per batch), got {self.p}")
        if self.k < 2:
            raise ValueError(f"k must be >= 2 (batch-hard triplet needs >= 2 images per identity), got {self.k}")
        if not 0 < self.head_lr_mult <= 1000:
            raise ValueError(f"head_lr_mult must lie in (0, 1000], got {self.head_lr_mult}")
        for name in ("warmup_epochs", "num_workers", "max_batches_per_epoch", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_optim_settings(self)
        check_augment_settings(self.crop_scale, self.flip_p, self.erasing_p)
        check_device_settings(self.device, self.amp)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


class TrainableModel(Protocol):
    inputs: tuple[str, ...]

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class LabelledDataset(Sized, Protocol):
    """A map-style dataset of dict samples that also exposes its train labels for the P x K sampler."""

    labels: np.ndarray

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]: ...


def train_summary(result: TrainResult, num_classes: int) -> dict[str, Any]:
    """The reID training record (`reid.engine.artifacts.train_record`) plus ``final_id_loss`` and
    ``chance_id_loss`` = ln(classes), an untrained ID head's loss."""
    last = epoch_losses(result.metrics)
    # the ID loss (x id_weight) on the retrieval / fused global feature: baseline and san "id", the dsa family "id_z_global"
    id_term = next((k for k in ("id", "id_z_global") if k in last), None)
    return train_record(result, final_id_loss=last[id_term] if id_term else None,
                        chance_id_loss=round(float(np.log(num_classes)), 6))


def train_timing(result: TrainResult, world_size: int) -> dict[str, Any]:
    """timing.json of a reID run: wall-clock figures and the number of DDP processes."""
    return timing_record(result, world_size=world_size)


class ReidTask:
    """P x K batches of a labelled dataset and the model's own loss terms (`reid.engine.loop.Task`)."""

    def __init__(self, model: nn.Module, dataset: LabelledDataset, cfg: TrainConfig) -> None:
        self.model, self.dataset, self.cfg = model, dataset, cfg
        self.optimizer = build_optimizer(model, cfg, cfg.head_lr_mult, backbone_parameters(model))
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.sampler: PKSampler | None = None
        self.loader: DataLoader | None = None
        # the dataset yields crops at crop_source_size (reid.data.transforms.train_transform)
        self.augment = BatchAugment(cfg.size, crop_scale=cfg.crop_scale, flip_p=cfg.flip_p, erasing_p=cfg.erasing_p)

    def batches(self, epoch: int) -> DataLoader:
        if self.loader is None:  # built on the first epoch: the rank is known once `fit` joined the group
            info = distributed.current()
            self.sampler = PKSampler(self.dataset.labels, self.cfg.p, self.cfg.k, seed=self.cfg.seed,
                                     rank=info.rank, world_size=info.world_size)
            self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=self.cfg.num_workers,
                                     pin_memory=next(self.model.parameters()).is_cuda)
        self.sampler.set_epoch(epoch)
        return self.loader

    def loss_terms(self, net: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The batch's random crop, flip and erasing (drawn here, from the epoch-seeded RNG), then the loss."""
        batch = {**batch, "image": self.augment(batch["image"])}
        return self.model.losses(net(batch), batch)


def fit_config(cfg: TrainConfig, desc: str = "epoch") -> FitConfig:
    return FitConfig(epochs=cfg.epochs, seed=cfg.seed, device=cfg.device, amp=cfg.amp,
                     channels_last=cfg.channels_last, max_batches_per_epoch=cfg.max_batches_per_epoch, desc=desc)


def train(model: nn.Module, dataset: LabelledDataset, cfg: TrainConfig, out_dir: str | Path, *,
          live_dir: str | Path | None = None, run_id: str = "") -> TrainResult:
    """Train `model` in place for `cfg.epochs`, resuming from ``out_dir/checkpoint/last.pt`` if present.

    `live_dir` (default ``out_dir/live``) receives DVCLive per-epoch metrics. `run_id` (e.g. the
    model name, its config and a digest of its data) goes into the checkpoint fingerprint: a
    checkpoint from another run is ignored with a warning instead of being resumed.
    """
    out_dir = Path(out_dir)
    key = run_key(cfg, exempt=("epochs", "device"), data=run_id, world_size=distributed.launched_world_size())
    return fit(ReidTask(model, dataset, cfg), fit_config(cfg), checkpoint_dir=out_dir / "checkpoint", key=key,
               live_dir=Path(live_dir) if live_dir is not None else out_dir / "live")
