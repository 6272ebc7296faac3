"""The one training loop every network of the project trains with (SPEC §9).

A network supplies only what differs, as a `Task`: its model, optimiser and LR schedule, the
batches of one epoch, and the named loss terms of one batch. `fit` owns the rest: the device,
AMP and channels-last on CUDA, DDP under torchrun, the per-epoch seed, the optimiser step,
progress and timing, and — through hooks, in this order after every epoch — held-out evaluation,
DVCLive curves and the checkpoint.

Exact resumption, one rule for every network:
- every epoch starts by seeding torch's RNG from (seed, epoch, rank) (`epoch_seed`), and a task
  draws its epoch's order and augmentation from that RNG (or from a generator it seeds from the
  epoch), so epoch e draws the same whether or not the run was interrupted before it;
- the checkpoint (``<dir>/last.pt``, tensors only) holds weights, optimiser, schedule and AMP
  scaler state, the counters and a fingerprint of the run key: every setting that changes what an
  epoch computes, and a digest of the data (`run_key`). A checkpoint with another fingerprint, or
  past the requested epochs, is ignored with a warning and training starts from scratch; so raising
  ``epochs`` continues a run exactly when the schedule does not depend on the total (a config whose
  schedule does keeps ``epochs`` in its key).

With DataLoader workers this still holds (worker seeds derive from the reseeded main RNG) as long
as `num_workers` is unchanged; on CUDA non-deterministic kernels make it equal in distribution
rather than bit for bit.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from reid.data.transforms import model_inputs
from reid.device import AmpMode, autocast_dtype, default_device, memory_format
from reid.engine import distributed
from reid.engine.checkpoint import checkpoint_file, fingerprint, load_checkpoint, save_checkpoint
from reid.io import remove_stale_temps

Batch = dict[str, torch.Tensor]


class SizedBatches(Sized, Iterable[Batch], Protocol):
    """An epoch's batches: iterable once, with a length (the progress bar's total)."""


class Task(Protocol):
    """What a network supplies to `fit`."""

    model: nn.Module  # trained in place; its state dict is what the checkpoint keeps
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def batches(self, epoch: int) -> SizedBatches:
        """The batches of 0-based `epoch` (CPU tensors; "image" [B, ...] is the sample count).
        Called right after torch's RNG is seeded for the epoch."""
        ...

    def loss_terms(self, net: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Named, already-weighted loss terms of one batch on the device; `fit` minimises their sum.
        `net` is the model, or its DDP wrapper: call it for the forward pass."""
        ...


@dataclass
class FitConfig:
    """The loop's own knobs (a network's config maps its fields onto these)."""

    epochs: int
    seed: int = 0
    device: str = "auto"
    amp: AmpMode = "off"  # reid.device.autocast_dtype: auto on CUDA only, bf16 on CPU too
    channels_last: bool = False  # CUDA, and the CPU in fp32 (reid.device.memory_format)
    max_batches_per_epoch: int = 0  # 0 = all of `Task.batches`; > 0 caps an epoch (small CPU profiles)
    schedule: Literal["epoch", "step"] = "epoch"  # scheduler.step() after every epoch or every optimiser step
    desc: str = "epoch"  # progress-bar label


@dataclass
class TrainResult:
    epochs: int
    train_time_s: float  # summed epoch times, across resumptions
    images_per_s: float
    final_loss: float
    metrics: dict[str, float] = field(default_factory=dict)  # last epoch's logged metrics
    first_metrics: dict[str, float] = field(default_factory=dict)  # first epoch's logged metrics
    steps: int = 0  # optimiser steps over the whole run, across resumptions
    history: list[dict[str, float]] = field(default_factory=list)  # every epoch's logged metrics, resumptions included


@dataclass
class FitState:
    """Where a run stands; a checkpoint restores all of it."""

    epoch: int = 0  # epochs completed
    steps: int = 0
    images: int = 0
    train_time_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's (logged + timing)
    first_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # every epoch's logged metrics (the checkpoint keeps them)

    @property
    def logged(self) -> dict[str, float]:
        """The last epoch's curves: everything but the timings (identical runs log identical curves)."""
        return {k: v for k, v in self.metrics.items() if k not in TIMING_KEYS}


TIMING_KEYS = ("epoch_time_s", "images_per_s")


class Hook:
    """Called by `fit` before the first epoch, after every epoch and after the last one."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_epoch(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed for one epoch on one rank: a pure function of (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def run_key(config: Any, *, exempt: Sequence[str] = ("epochs", "device"), data: str = "", world_size: int = 1) -> str:
    """What a resumable checkpoint must agree on: the dataclass `config` without the `exempt` fields
    (those that do not change what an epoch computes), the data digest and the world size."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in exempt}
    return f"{sorted(settings.items())}|world={world_size}|{data}"


class Trainer:
    """One run of a `Task`: the device, the DDP wrapper, the AMP scaler and the `FitState`."""

    def __init__(self, task: Task, cfg: FitConfig) -> None:
        self.task, self.cfg = task, cfg
        device = default_device(cfg.device)
        self.info = distributed.init_distributed(device)
        self.device = distributed.rank_device(device, self.info)
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        self.amp_dtype = autocast_dtype(cfg.amp, self.device)
        self.memory_format = memory_format(cfg.channels_last, self.device, self.amp_dtype)
        task.model.to(self.device)
        task.model.to(memory_format=self.memory_format)
        # The optimiser may have been built before the move: its state follows the parameters.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.net: nn.Module = task.model
        if self.info.world_size > 1:
            self.net = DistributedDataParallel(task.model, device_ids=[self.device.index] if on_cuda else None)
        self.state = FitState()

    def run_epoch(self, epoch: int) -> None:
        """Train one epoch and record its mean loss terms, lr (at the epoch's start) and timing in `state`."""
        cfg, task, state = self.cfg, self.task, self.state
        torch.manual_seed(epoch_seed(cfg.seed, epoch, self.info.rank))
        batches = task.batches(epoch)
        n_batches = len(batches) if cfg.max_batches_per_epoch == 0 else min(len(batches), cfg.max_batches_per_epoch)
        lr = task.optimizer.param_groups[0]["lr"]
        sums, n_images, seconds = self._train_batches(itertools.islice(batches, n_batches), n_batches,
                                                      desc=f"{cfg.desc} {epoch + 1}/{cfg.epochs}")
        if cfg.schedule == "epoch":
            task.scheduler.step()
        distributed.broadcast_buffers(task.model)
        # Mean loss terms over samples, then over ranks; images summed over ranks, so images/s is
        # global (DDP keeps ranks in step).
        names = sorted(sums)
        means = (distributed.all_reduce_mean(torch.stack([sums[n] / max(n_images, 1) for n in names]).float()).tolist()
                 if names else [])
        n_images = int(distributed.all_reduce_sum(torch.tensor(n_images, device=self.device)).item())
        state.epoch = epoch + 1
        state.steps += n_batches
        state.images += n_images
        state.train_time_s += seconds
        logged = {"loss": float(sum(means)), **{f"loss_{n}": m for n, m in zip(names, means, strict=True)}, "lr": lr}
        if not np.isfinite(logged["loss"]):
            raise FloatingPointError(f"training diverged: loss {logged['loss']} in epoch {epoch + 1}")
        state.metrics = {**logged, "epoch_time_s": seconds, "images_per_s": n_images / max(seconds, 1e-9)}

    def _train_batches(self, batches: Iterator[Batch], total: int, *, desc: str) -> tuple[dict[str, torch.Tensor], int, float]:
        """Optimiser steps over `batches`: per-term sums weighted by batch size (detached), images, seconds."""
        task, device, scaler = self.task, self.device, self.scaler
        self.net.train()
        sums: dict[str, torch.Tensor] = {}
        n_images = 0
        start = time.perf_counter()
        bar = tqdm(total=total, desc=desc, disable=not self.info.is_main, leave=False, dynamic_ncols=True)
        for i, batch in enumerate(batches):
            batch = model_inputs({k: v.to(device, non_blocking=True) for k, v in batch.items()})
            batch["image"] = batch["image"].contiguous(memory_format=self.memory_format)
            n = len(batch["image"])
            with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                terms = task.loss_terms(self.net, batch)
            loss = sum(terms.values())
            task.optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(task.optimizer)
            scaler.update()
            if self.cfg.schedule == "step":
                task.scheduler.step()
            for name, term in terms.items():
                term = term.detach().float() * n
                sums[name] = sums[name] + term if name in sums else term
            n_images += n
            bar.update()
            if self.info.is_main and i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return sums, n_images, time.perf_counter() - start


def fit(task: Task, cfg: FitConfig, *, checkpoint_dir: str | Path | None = None, key: str = "",
        live_dir: str | Path | None = None, evaluate: Callable[[], Mapping[str, float]] | None = None,
        hooks: Sequence[Hook] = ()) -> TrainResult:
    """Train `task.model` in place for `cfg.epochs`, resuming from ``checkpoint_dir/last.pt`` when its
    fingerprint matches `key` (`run_key`).

    After every epoch, in this order: `evaluate()` (held-out metrics, in eval mode and without
    gradients, added to the epoch's curves), the DVCLive curves in `live_dir` (rank 0), the
    checkpoint (rank 0), then `hooks`. Logging comes before the checkpoint: a kill in between re-runs
    that epoch, whose curve rows the resumed run drops before logging it again.
    """
    trainer = Trainer(task, cfg)
    resume = CheckpointHook(checkpoint_dir, key) if checkpoint_dir is not None else None
    live = LiveHook(live_dir) if live_dir is not None else None
    before = [h for h in (resume, live) if h is not None] + list(hooks)  # the checkpoint sets the start epoch
    after = [h for h in (live, resume) if h is not None] + list(hooks)  # log, then checkpoint
    for hook in before:
        hook.before_train(trainer)
    state = trainer.state
    for epoch in range(state.epoch, cfg.epochs):
        trainer.run_epoch(epoch)
        if evaluate is not None:
            state.metrics.update(held_out_metrics(task.model, evaluate))
        state.first_metrics = state.first_metrics or dict(state.metrics)
        state.history.append(state.logged)
        for hook in after:
            hook.after_epoch(trainer)
        distributed.barrier()
    for hook in after:
        hook.after_train(trainer)
    return TrainResult(epochs=cfg.epochs, train_time_s=state.train_time_s,
                       images_per_s=state.images / max(state.train_time_s, 1e-9),
                       final_loss=state.metrics.get("loss", float("nan")), metrics=dict(state.metrics),
                       first_metrics=dict(state.first_metrics), steps=state.steps, history=list(state.history))


def held_out_metrics(model: nn.Module, evaluate: Callable[[], Mapping[str, float]]) -> dict[str, float]:
    """`evaluate()` with the model in eval mode and no gradients; its mode is restored after."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in evaluate().items()}
    model.train(was_training)
    return metrics


class CheckpointHook(Hook):
    """Resume from ``directory/last.pt`` when its fingerprint matches `key`; rewrite it after every epoch."""

    def __init__(self, directory: str | Path, key: str) -> None:
        self.path = checkpoint_file(directory)
        self.fingerprint = fingerprint(key)

    def before_train(self, trainer: Trainer) -> None:
        if trainer.info.is_main:
            remove_stale_temps(self.path.parent)  # a killed save's partial file must not stay in the kept folder
        if not self.path.is_file():
            return
        state = load_checkpoint(self.path)
        if not torch.equal(state["fingerprint"], self.fingerprint):
            warnings.warn(f"{self.path} was written with other settings or data; training from scratch", stacklevel=3)
        elif "history" not in state:
            warnings.warn(f"{self.path} predates per-epoch curves in checkpoints; training from scratch", stacklevel=3)
        elif int(state["epoch"]) > trainer.cfg.epochs:
            warnings.warn(f"{self.path} is at epoch {int(state['epoch'])}, past epochs={trainer.cfg.epochs}; "
                          "training from scratch", stacklevel=3)
        else:
            task = trainer.task
            task.model.load_state_dict(state["model"])
            task.optimizer.load_state_dict(state["optimizer"])
            task.scheduler.load_state_dict(state["scheduler"])
            trainer.scaler.load_state_dict(state["scaler"])
            trainer.state = FitState(
                epoch=int(state["epoch"]), steps=int(state["steps"]), images=int(state["images"]),
                train_time_s=float(state["train_time_s"]),
                metrics={k: float(v) for k, v in state["metrics"].items()},
                first_metrics={k: float(v) for k, v in state["first_metrics"].items()},
                history=[{k: float(v) for k, v in row.items()} for row in state["history"]])

    def after_epoch(self, trainer: Trainer) -> None:
        if not trainer.info.is_main:
            return
        task, state = trainer.task, trainer.state
        save_checkpoint(self.path, {
            "model": task.model.state_dict(), "optimizer": task.optimizer.state_dict(),
            "scheduler": task.scheduler.state_dict(), "scaler": trainer.scaler.state_dict(),
            "epoch": torch.tensor(state.epoch), "fingerprint": self.fingerprint,
            "steps": torch.tensor(state.steps), "images": torch.tensor(state.images),
            "train_time_s": torch.tensor(state.train_time_s, dtype=torch.float64),
            # float64: a resumed run's record must equal an uninterrupted run's (float32 moves the 7th digit)
            "metrics": {k: torch.tensor(v, dtype=torch.float64) for k, v in state.metrics.items()},
            "first_metrics": {k: torch.tensor(v, dtype=torch.float64) for k, v in state.first_metrics.items()},
            # every epoch's curve rows: a resumed or restored run rewrites its curves from these
            "history": [{k: torch.tensor(v, dtype=torch.float64) for k, v in row.items()} for row in state.history],
        })


class LiveHook(Hook):
    """DVCLive per-epoch curves in `live_dir` (rank 0, ``dvcyaml=False``), one step per epoch.

    The curves always describe the network the run ends with: a fresh run wipes the directory, and a
    resumed or restored one (even one with nothing left to train) rewrites it from the checkpoint's
    per-epoch rows before going on, whatever was on disk (deleted curves, rows of a killed or other run).
    """

    def __init__(self, live_dir: str | Path) -> None:
        self.live_dir = Path(live_dir)
        self.live = None

    def before_train(self, trainer: Trainer) -> None:
        if not trainer.info.is_main:
            return
        from dvclive import Live  # imported here: it is slow to import and only rank 0 logs

        self.live = Live(str(self.live_dir), dvcyaml=False, save_dvc_exp=False)  # starts afresh
        for row in trainer.state.history:  # the checkpoint's epochs, when resumed
            self._log(row)

    def after_epoch(self, trainer: Trainer) -> None:
        if self.live is not None:
            self._log(trainer.state.logged)

    def _log(self, row: Mapping[str, float]) -> None:
        for name, value in row.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def after_train(self, trainer: Trainer) -> None:
        if self.live is not None:
            self.live.end()


class MappedBatches:
    """`make(item)` for each of `items`, built lazily while iterating (and so drawing its randomness in order)."""

    def __init__(self, items: Sequence[Any], make: Callable[[Any], Batch]) -> None:
        self.items, self.make = items, make

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Batch]:
        return (self.make(item) for item in self.items)
