"""The training loop (SPEC §9): P x K batches, Adam + warm-up/step LR, AMP and channels-last on CUDA,
DDP under torchrun, a checkpoint every epoch with exact resumption, DVCLive per-epoch metrics.

The model follows the engine interface: ``model.inputs`` (extra batch keys), ``model(batch) ->
outputs``, ``model.losses(outputs, batch) -> {name: weighted term}`` whose sum is minimised.

Exact resumption: every epoch starts by seeding torch's RNG from (seed, epoch, rank) and the
sampler plans from (seed, epoch), so epoch e draws the same crops, flips, erasures and
batches whether or not the run was interrupted before it; weights, Adam moments, LR schedule
and AMP scaler state come back from the checkpoint. With DataLoader workers this still holds
(worker seeds derive from the reseeded main RNG) as long as `num_workers` is unchanged; on CUDA
non-deterministic kernels make it equal in distribution rather than bit for bit.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid.data.samplers import PKSampler
from reid.data.transforms import check_augment_settings
from reid.device import check_device_name, default_device
from reid.engine import distributed
from reid.engine.checkpoint import (
    checkpoint_file,
    fingerprint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reid.engine.optim import build_optimizer, build_scheduler, check_optim_settings
from reid.io import drop_live_steps_from, remove_stale_temps


@dataclass
class TrainConfig:
    """Engine knobs (params.yaml section ``train``); defaults are the paper's (DSA §4.2)."""

    epochs: int = 320
    p: int = 16  # identities per batch (per rank under DDP)
    k: int = 4  # images per identity
    lr: float = 8e-4
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
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # CUDA only; auto = bf16 where supported
    channels_last: bool = True  # CUDA only

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
        for name in ("warmup_epochs", "num_workers", "max_batches_per_epoch", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_optim_settings(self)
        check_augment_settings(self.crop_scale, self.flip_p, self.erasing_p)
        check_device_name(self.device)

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


@dataclass
class TrainResult:
    epochs: int
    train_time_s: float  # summed epoch times, across resumptions
    images_per_s: float
    final_loss: float
    metrics: dict[str, float] = field(default_factory=dict)  # last epoch's logged metrics
    first_metrics: dict[str, float] = field(default_factory=dict)  # first epoch's logged metrics
    steps: int = 0  # optimiser steps over the whole run, across resumptions


def train_summary(result: TrainResult, num_classes: int) -> dict[str, Any]:
    """What metrics/train/<net>.json records: step count and first/last-epoch losses (no timings, so
    identical runs give identical files). ``chance_id_loss`` = ln(classes), an untrained ID head's loss."""
    def losses(metrics: dict[str, float]) -> dict[str, float]:
        return {k.removeprefix("loss_"): round(v, 6) for k, v in sorted(metrics.items()) if k.startswith("loss_")}

    last = losses(result.metrics)
    # the ID loss (x id_weight) on the retrieval / fused global feature: baseline and san "id", the dsa family "id_z_global"
    id_term = next((k for k in ("id", "id_z_global") if k in last), None)
    return {"epochs": result.epochs, "steps": result.steps,
            "first_epoch_loss": round(result.first_metrics.get("loss", float("nan")), 6),
            "last_epoch_loss": round(result.final_loss, 6),
            "first_epoch_losses": losses(result.first_metrics), "last_epoch_losses": last,
            "final_id_loss": last[id_term] if id_term else None,
            "chance_id_loss": round(float(np.log(num_classes)), 6)}


def train_timing(result: TrainResult, world_size: int) -> dict[str, Any]:
    """Wall-clock figures, kept apart from the tracked metrics (they differ on every run)."""
    return {"train_time_s": round(result.train_time_s, 2), "images_per_s": round(result.images_per_s, 2),
            "world_size": world_size}


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed for one epoch on one rank: a pure function of (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 autocast dtype on CUDA; None (full precision) on CPU or when off."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def run_key(cfg: TrainConfig, world_size: int, extra: str = "") -> str:
    """What a resumable checkpoint must agree on: all settings except the epoch count and device."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("epochs", "device")}
    return f"{sorted(settings.items())}|world={world_size}|{extra}"


def train(model: nn.Module, dataset: LabelledDataset, cfg: TrainConfig, out_dir: str | Path, *,
          live_dir: str | Path | None = None, run_id: str = "") -> TrainResult:
    """Train `model` in place for `cfg.epochs`, resuming from ``out_dir/checkpoint/last.pt`` if present.

    `live_dir` (default ``out_dir/live``) receives DVCLive per-epoch metrics. `run_id` (e.g. the
    model name and its config) goes into the checkpoint fingerprint: a checkpoint from another
    run is ignored with a warning instead of being resumed.
    """
    out_dir = Path(out_dir)
    live_dir = Path(live_dir) if live_dir is not None else out_dir / "live"
    device = default_device(cfg.device)
    info = distributed.init_distributed(device)
    device = distributed.rank_device(device, info)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True

    model.to(device)
    memory_format = torch.channels_last if cfg.channels_last and on_cuda else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    amp_dtype = autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    key = fingerprint(run_key(cfg, info.world_size, run_id))

    ckpt_path = checkpoint_file(out_dir / "checkpoint")
    if info.is_main:
        remove_stale_temps(ckpt_path.parent)  # a killed save's partial file must not stay in the persisted folder
    start_epoch, total_time, total_images, total_steps, last, first = 0, 0.0, 0, 0, {}, {}
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if not torch.equal(state["fingerprint"], key):
            warnings.warn(f"{ckpt_path} was written with other settings; training from scratch", stacklevel=2)
        elif int(state["epoch"]) > cfg.epochs:
            warnings.warn(f"{ckpt_path} is at epoch {int(state['epoch'])}, past epochs={cfg.epochs}; "
                          "training from scratch", stacklevel=2)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_epoch = int(state["epoch"])
            total_time, total_images = float(state["train_time_s"]), int(state["images"])
            total_steps = int(state["steps"])
            last = {k: float(v) for k, v in state["metrics"].items()}
            first = {k: float(v) for k, v in state["first_metrics"].items()}

    sampler = PKSampler(dataset.labels, cfg.p, cfg.k, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=on_cuda)
    net: nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)

    live = None
    if info.is_main and start_epoch < cfg.epochs:
        from dvclive import Live  # imported here: it is slow to import and only rank 0 logs

        # A fresh run wipes the directory; a resumed one keeps the epochs its checkpoint holds (rows
        # logged after it, by a run killed before checkpointing, go) and continues the step.
        if start_epoch > 0:
            drop_live_steps_from(live_dir, start_epoch)
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=start_epoch > 0)
        live.step = start_epoch

    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(cfg.seed, epoch, info.rank))
        lr = optimizer.param_groups[0]["lr"]
        sums, n_images, n_steps, seconds = _train_epoch(net, model, loader, optimizer, scaler, cfg, device, amp_dtype,
                                               memory_format, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                                               show=info.is_main)
        scheduler.step()
        distributed.broadcast_buffers(model)
        # Mean loss terms over ranks; images summed over ranks, so images/s is global (DDP keeps ranks in step).
        names = sorted(sums)
        means = distributed.all_reduce_mean(torch.stack([sums[n] for n in names]).float()).tolist() if names else []
        n_images = int(distributed.all_reduce_sum(torch.tensor(n_images, device=device)).item())
        total_time += seconds
        total_images += n_images
        total_steps += n_steps
        # DVCLive gets no timings, so identical runs write identical curves (they are in TrainResult).
        logged = {"loss": float(sum(means)), **{f"loss_{n}": m for n, m in zip(names, means, strict=True)}, "lr": lr}
        last = {**logged, "epoch_time_s": seconds, "images_per_s": n_images / max(seconds, 1e-9)}
        if not np.isfinite(last["loss"]):
            raise FloatingPointError(f"training diverged: loss {last['loss']} in epoch {epoch + 1}")
        first = first or dict(last)
        if info.is_main:
            # Logged before the checkpoint: a kill in between re-runs this epoch, whose rows the
            # resumed run drops before logging it again (drop_live_steps_from above).
            for name, value in logged.items():
                live.log_metric(name, value)
            live.next_step()
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": torch.tensor(epoch + 1), "rng": rng_state(), "fingerprint": key,
                "train_time_s": torch.tensor(total_time, dtype=torch.float64),
                "images": torch.tensor(total_images), "steps": torch.tensor(total_steps),
                "metrics": {k: torch.tensor(v) for k, v in last.items()},
                "first_metrics": {k: torch.tensor(v) for k, v in first.items()},
            })
        distributed.barrier()
    if live is not None:
        live.end()
    return TrainResult(epochs=cfg.epochs, train_time_s=total_time,
                       images_per_s=total_images / max(total_time, 1e-9),
                       final_loss=last.get("loss", float("nan")), metrics=last, first_metrics=first,
                       steps=total_steps)


def _train_epoch(net: nn.Module, model: Any, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, cfg: TrainConfig, device: torch.device,
                 amp_dtype: torch.dtype | None, memory_format: torch.memory_format, *, desc: str,
                 show: bool) -> tuple[dict[str, torch.Tensor], int, int, float]:
    """One pass over the loader: mean (detached) loss terms per batch, images seen, optimiser steps, seconds."""
    net.train()
    sums: dict[str, torch.Tensor] = {}
    n_batches = len(loader) if cfg.max_batches_per_epoch == 0 else min(len(loader), cfg.max_batches_per_epoch)
    n_images = 0
    start = time.perf_counter()
    bar = tqdm(total=n_batches, desc=desc, disable=not show, leave=False, dynamic_ncols=True)
    for i, batch in enumerate(itertools.islice(loader, n_batches)):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch["image"] = batch["image"].contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = net(batch)
            terms = model.losses(outputs, batch)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        for name, term in terms.items():
            term = term.detach().float()
            sums[name] = sums[name] + term if name in sums else term
        n_images += len(batch["label"])
        bar.update()
        if show and i % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {k: v / max(n_batches, 1) for k, v in sums.items()}, n_images, n_batches, seconds
