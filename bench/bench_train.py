"""Training-loop overhead: reid.engine.trainer.train vs a bare PyTorch loop on the same work.

Same model, same dataset, P x K sampler, transforms and Adam; the bare loop has no checkpoint,
no DVCLive, no progress bar, no per-epoch reseeding. Prints images/s of both and their ratio
(target: ours >= 0.90 x bare, i.e. overhead <= 10 %), wall time including the per-epoch
checkpoint, and on CPU the ratio of process CPU seconds (robust on a shared machine). Model: the
resnet18 baseline when reid.modeling is present, else a small stand-in.

Then the cost of one training step (forward, losses, backward, Adam) of every model relative to
its reference: `dsa` and `dsa_san` against `baseline2b` (the DSAG-Stream's price), `baseline2b`
and `san` against `baseline`. Sizes are the default profile's (64x32 crops, S = 12 DSAP, P8 x K4).

    .venv/bin/python bench/bench_train.py [--epochs 2] [--batches 4] [--model auto|resnet18|standin]
                                          [--size 64 32] [--dsap-size 12] [--skip-models]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from reid.data.samplers import PKSampler
from reid.data.transforms import BatchAugment, model_inputs, train_transform
from reid.device import default_device
from reid.engine.optim import build_optimizer
from reid.engine.trainer import TrainConfig, train


class MemoryDataset:
    """Random uint8 crops held in memory, through the real train transform (no disk in the timing)."""

    def __init__(self, n_ids: int, per_id: int, size: tuple[int, int]) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n_ids * per_id, *size, 3), dtype=np.uint8)
        self.labels = np.repeat(np.arange(n_ids), per_id)
        self.transform = train_transform(size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.transform(self.images[i]), "label": torch.tensor(self.labels[i])}


class StandIn(nn.Module):
    inputs: tuple[str, ...] = ()
    feature_dim = 128

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 128, 3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.classifier(self.body(batch["image"]))}

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"id": F.cross_entropy(outputs["logits"], batch["label"])}


def make_model(kind: str, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    if kind in ("auto", "resnet18"):
        try:
            from reid.modeling.build import ModelConfig, build_model
        except ImportError:
            if kind == "resnet18":
                raise
        else:
            return build_model("baseline", num_classes, ModelConfig(backbone="resnet18", pretrained=None))
    return StandIn(num_classes)


def plain_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               amp_dtype: torch.dtype | None = None) -> None:
    """Forward, summed losses, backward, optimizer step: the bare PyTorch reference (forward and
    losses under autocast to `amp_dtype` when given)."""
    device_type = batch["image"].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss = sum(model.losses(model(batch), batch).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_seconds(name: str, size: tuple[int, int], dsap_size: int, p: int, k: int, device: torch.device,
                 repeats: int, amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> float:
    """Best-of-`repeats` seconds of one training step of model `name` (default-profile config) on random
    inputs; the model and images in the channels_last layout if asked."""
    from reid.modeling import MODEL_INPUTS
    from reid.modeling.build import build_model
    from reid.modeling.config import CACHE_SHAPES, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", pretrained=None, width_mult=0.25, decoder_width_mult=0.5)
    shapes = {key: value for key, value in (("dsap_size", dsap_size), ("texture_tile", 32))
              if CACHE_SHAPES[key] in MODEL_INPUTS[name]}
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(name, 100, cfg, **shapes).to(device).train().to(memory_format=layout)
    b = p * k
    batch = {"image": torch.randn(b, 3, *size), "label": torch.arange(p).repeat_interleave(k),
             "dsap": torch.randn(b, 24, 3, dsap_size, dsap_size), "texture": torch.rand(b, 3, 6 * 32, 4 * 32) * 2 - 1}
    batch = {key: v.to(device) for key, v in batch.items() if key in ("image", "label", *model.inputs)}
    batch["image"] = batch["image"].contiguous(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for _ in range(repeats + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        plain_step(model, optimizer, batch, amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def print_step_costs(size: tuple[int, int], dsap_size: int, p: int, k: int, device: torch.device,
                     repeats: int) -> None:
    seconds = {m: step_seconds(m, size, dsap_size, p, k, device, repeats)
               for m in ("baseline", "baseline2b", "dsa", "san", "dsa_san")}
    reference = {"baseline": "baseline", "baseline2b": "baseline", "dsa": "baseline2b", "san": "baseline",
                 "dsa_san": "baseline2b"}
    print(f"training step cost, {size[0]}x{size[1]}, DSAP S={dsap_size}, batch {p}x{k}, {device}, best of {repeats}")
    for name, s in seconds.items():
        ref = reference[name]
        print(f"  {name:10s} {s:7.3f} s/step  {p * k / s:7.1f} images/s   x{s / seconds[ref]:.2f} of {ref}")


def bare_loop(model: nn.Module, dataset: MemoryDataset, cfg: TrainConfig, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds for cfg.epochs x cfg.max_batches_per_epoch plain steps."""
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    sampler = PKSampler(dataset.labels, cfg.p, cfg.k, seed=cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers)
    augment = BatchAugment(cfg.size, crop_scale=cfg.crop_scale, flip_p=cfg.flip_p, erasing_p=cfg.erasing_p)
    start, cpu = time.perf_counter(), time.process_time()
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        for batch in itertools.islice(loader, cfg.max_batches_per_epoch):
            batch = model_inputs({k: v.to(device) for k, v in batch.items()})
            plain_step(model, optimizer, {**batch, "image": augment(batch["image"])})
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", choices=["auto", "resnet18", "standin"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="batches per epoch")
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (order alternates); best of each is kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 32), metavar=("H", "W"))
    parser.add_argument("--dsap-size", type=int, default=12)
    parser.add_argument("--skip-models", action="store_true", help="skip the per-model step costs")
    args = parser.parse_args()
    size = tuple(args.size)
    device = default_device(args.device)
    n_ids = args.p * args.batches  # enough identities for `batches` full P x K batches per epoch
    dataset = MemoryDataset(n_ids, args.k, size)
    cfg = TrainConfig(epochs=args.epochs, p=args.p, k=args.k, height=size[0], width=size[1], num_workers=0,
                      max_batches_per_epoch=args.batches, device=str(device), warmup_epochs=1)
    images = args.epochs * args.batches * args.p * args.k
    bare, bare_cpu, ours_wall, ours_loop, ours_cpu = [], [], [], [], []
    for r in range(args.rounds):
        for which in ("bare", "ours") if r % 2 == 0 else ("ours", "bare"):  # alternate: shared machines drift
            model = make_model(args.model, n_ids)
            if which == "bare":
                wall, cpu = bare_loop(model, dataset, cfg, device)
                bare.append(wall)
                bare_cpu.append(cpu)
                continue
            with tempfile.TemporaryDirectory() as tmp:
                start, cpu = time.perf_counter(), time.process_time()
                result = train(model, dataset, cfg, Path(tmp))
                ours_wall.append(time.perf_counter() - start)
                ours_cpu.append(time.process_time() - cpu)
                ours_loop.append(result.train_time_s)
    name = type(make_model(args.model, n_ids)).__name__
    b, w, lp = min(bare), min(ours_wall), min(ours_loop)
    print(f"bench_train: {name} {size[0]}x{size[1]}, batch {args.p}x{args.k}, {args.epochs} epochs x "
          f"{args.batches} batches, {device}, best of {args.rounds}")
    print(f"  bare loop            {images / b:8.1f} images/s")
    print(f"  reid train (epochs)  {images / lp:8.1f} images/s   ratio {b / lp:.3f}  (loop only)")
    print(f"  reid train (wall)    {images / w:8.1f} images/s   ratio {b / w:.3f}  "
          f"(+ setup, checkpoint and DVCLive per epoch: {(w - lp) / args.epochs:.2f} s/epoch)")
    if device.type == "cpu":  # CPU seconds of this process: far less sensitive to other jobs than wall time
        print(f"  CPU-time ratio (whole train call incl. checkpoints) {min(bare_cpu) / min(ours_cpu):.3f}")
    if not args.skip_models and args.model != "standin":
        print_step_costs(size, args.dsap_size, 8, 4, device, args.rounds)


if __name__ == "__main__":
    main()
