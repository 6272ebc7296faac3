"""GPU readiness: each stage's throughput at the paper profile's shapes, a fixed amount of work per stage.

Run where a GPU is lent (the device tool gives 15 minutes of device time, so every stage does a fixed
number of batches, not an epoch):

    .venv/bin/python bench/gpu_ready.py [--crops 2048] [--steps 20] [--workers 8] [--out gpu_ready.json]

and on any CPU with ``--tiny`` (small shapes, a few batches: what tests/test_gpu_ready.py runs, so the
script is known to work before a device is). Inputs: --crops person-like 128x64 JPEG crops, a DSAP cache
(S = --grid) and a texture cache (T = --tile) as the stages write them (bench/bench_loader.py builds
them; throughput does not depend on what the pixels show). Stages, each timed after one untimed batch:

  densepose   the lite DensePose (untrained weights: its speed does not depend on them), crops/s
  dsap        the DSAP warp (reid.dsap.warp, this process) of the crops and their IUV, crops/s
  texture     SAN-PG (--backbone encoder at --height x --width) painting atlases, crops/s
  loader      the dsa_san training loader alone (crop + DSAP + texture, --workers processes), samples/s
  train@<m>   --steps training steps of each model (P x K batches through the real loader, AMP auto:
              bf16 on CUDA), images/s and peak GPU memory
  features    the baseline's forward_features with flip (reid.engine.inference), crops/s
  search      FAISS top-100 (on the GPU when faiss sees one) of Market-1501's 3,368 queries among its
              19,732 gallery crops, random 2,048-d features, seconds

Prints one line per stage and writes them to --out as JSON: {"device", "args", "stages": {name: {...}}}.
The loader keeps up with training when ``loader`` samples/s exceeds every ``train@<m>`` images/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from bench_loader import build_inputs
from torch.utils.data import DataLoader

from reid.data.samplers import PKSampler
from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import eval_transform, train_transform
from reid.densepose.lite import LiteArch, LiteEstimator
from reid.densepose.lite import build_model as build_lite
from reid.device import default_device
from reid.dsap import warp
from reid.engine.inference import extract_features
from reid.engine.trainer import TrainConfig, train
from reid.io import read_image
from reid.modeling import MODEL_INPUTS, MODEL_NAMES
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig
from reid.retrieval import search
from reid.sanpg.cache import build_texture_cache
from reid.sanpg.config import SanPGArch, TextureConfig
from reid.sanpg.model import build_sanpg

MARKET_QUERY, MARKET_GALLERY = 3368, 19732


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def densepose_rate(images: list[np.ndarray], device: torch.device, batch: int, sync) -> tuple[dict, list]:
    estimator = LiteEstimator(build_lite(LiteArch()), LiteArch(), device, batch_size=batch, progress=False)
    estimator.predict(images[:batch])  # warm-up
    out: list = []
    seconds = timed(lambda: out.extend(estimator.predict(images)), sync)
    return {"crops_per_s": len(images) / seconds, "seconds": seconds}, [r.iuv for r in out]


def dsap_rate(images: list[np.ndarray], iuvs: list[np.ndarray], grid: int) -> dict:
    stacked, stacked_iuv = np.stack(images), np.stack(iuvs)
    warp(stacked[:8], stacked_iuv[:8], grid)
    seconds = timed(lambda: warp(stacked, stacked_iuv, grid), lambda: None)
    return {"crops_per_s": len(images) / seconds, "seconds": seconds}


def texture_rate(table, args, device: torch.device, folder: Path, sync) -> dict:
    arch = SanPGArch(backbone=args.backbone, tile=args.tile, height=args.height, width=args.width)
    model = build_sanpg(arch, pretrained=None)
    manifest = table.append_column("split", pa.array(["query"] * table.num_rows)).append_column(
        "pid", pa.array([0] * table.num_rows))
    dataset = ReidDataset(manifest, eval_transform(arch.size))
    cfg = TextureConfig(batch_size=args.batch, num_workers=args.workers, n_samples=0, device=str(device))
    first = min(args.batch, table.num_rows)
    build_texture_cache(model, torch.utils.data.Subset(dataset, range(first)), manifest.slice(0, first), cfg,
                        folder / "warm.parquet", tile=args.tile, device=device, progress=False)
    seconds = timed(lambda: build_texture_cache(model, dataset, manifest, cfg, folder / "texture_out.parquet",
                                                tile=args.tile, device=device, progress=False), sync)
    return {"crops_per_s": table.num_rows / seconds, "seconds": seconds}


def loader_rate(dataset: ReidDataset, args) -> dict:
    sampler = PKSampler(dataset.labels, args.p, args.k, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers)
    batches = iter(loader)
    next(batches)  # workers started, first batch made
    n = 0
    t0 = time.perf_counter()
    for _, batch in zip(range(args.steps), batches, strict=False):
        n += len(batch["image"])
    seconds = time.perf_counter() - t0
    return {"samples_per_s": n / seconds, "seconds": seconds, "workers": args.workers}


def train_rate(name: str, dataset: ReidDataset, args, device: torch.device, folder: Path) -> dict:
    cfg = ModelConfig(backbone=args.backbone, pretrained=None)
    shapes = {"dsap_size": args.grid} if "dsap" in MODEL_INPUTS[name] else {}
    if "texture" in MODEL_INPUTS[name]:
        shapes["texture_tile"] = args.tile
    model = build_model(name, int(dataset.labels.max()) + 1, cfg, **shapes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # epoch 1 warms up (cudnn autotuning, workers); the rate is epoch 2's
    result = train(model, dataset, TrainConfig(epochs=2, p=args.p, k=args.k, height=args.height, width=args.width,
                                               warmup_epochs=0, num_workers=args.workers,
                                               max_batches_per_epoch=args.steps, device=str(device)),
                   folder / f"train_{name}", run_id=name)
    row = {"images_per_s": result.metrics["images_per_s"], "epoch_seconds": result.metrics["epoch_time_s"]}
    if device.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return row


def features_rate(dataset: ReidDataset, args, device: torch.device, sync) -> dict:
    model = build_model("baseline", 2, ModelConfig(backbone=args.backbone, pretrained=None)).inference_model()
    ids = dataset.image_ids
    kwargs = {"device": device, "batch_size": args.batch, "num_workers": args.workers, "flip": True}
    extract_features(model, torch.utils.data.Subset(dataset, range(args.batch)), ids[:args.batch], **kwargs)
    seconds = timed(lambda: extract_features(model, dataset, ids, **kwargs), sync)
    return {"crops_per_s": len(ids) / seconds, "seconds": seconds}


def search_time(n_query: int, n_gallery: int, dim: int) -> dict:
    """reid.retrieval.search, which shards the index over the GPUs when faiss has any."""
    import faiss
    rng = np.random.default_rng(0)
    query = rng.standard_normal((n_query, dim), dtype=np.float32)
    gallery = rng.standard_normal((n_gallery, dim), dtype=np.float32)
    search(query[:8], gallery, 100, "cosine")
    seconds = timed(lambda: search(query, gallery, 100, "cosine"), lambda: None)
    return {"seconds": seconds, "queries": n_query, "gallery": n_gallery, "dim": dim,
            "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20, help="timed training / loader batches per model")
    parser.add_argument("--batch", type=int, default=128, help="inference batch (densepose, texture, features)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--grid", type=int, default=32, help="DSAP side S")
    parser.add_argument("--tile", type=int, default=32, help="texture atlas tile T")
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("gpu_ready.json"))
    parser.add_argument("--tiny", action="store_true",
                        help="a CPU check: 64 crops, resnet18 at 64x32, S=8, T=8, P4 x K2, 2 steps, 0 workers")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in dict(crops=64, steps=2, batch=16, workers=0, backbone="resnet18", height=64, width=32,
                               grid=8, tile=8, p=4, k=2).items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = default_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_ready on {name}: {args.crops} crops -> {args.height}x{args.width}, {args.backbone}, "
          f"S={args.grid}, T={args.tile}, P{args.p} x K{args.k}, {args.steps} steps, {args.workers} workers")
    stages: dict[str, dict] = {}

    def report(stage: str, row: dict) -> None:
        stages[stage] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        print(f"{stage:<18}" + "  ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in row.items()), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # labels in P x K reach: crops / (8 per identity) identities
        table, dsap_path, texture_path = build_inputs(folder, args.crops, args.grid, args.tile)
        table = table.set_column(table.column_names.index("label"), "label", pa.array(np.arange(args.crops) // 8))
        images = [read_image(p) for p in table["path"].to_pylist()]
        row, iuvs = densepose_rate(images, device, args.batch, sync)
        report("densepose", row)
        report("dsap", dsap_rate(images, iuvs, args.grid))
        report("texture", texture_rate(table, args, device, folder, sync))
        def train_set(inputs: tuple[str, ...]) -> ReidDataset:
            return ReidDataset(table, train_transform((args.height, args.width)),
                               dsap_path=dsap_path if "dsap" in inputs else None,
                               texture_path=texture_path if "texture" in inputs else None)

        report("loader", loader_rate(train_set(MODEL_INPUTS["dsa_san"]), args))
        for model in args.models:
            report(f"train@{model}", train_rate(model, train_set(MODEL_INPUTS[model]), args, device, folder))
        report("features", features_rate(ReidDataset(table, eval_transform((args.height, args.width))), args,
                                         device, sync))
    scale = 1 if not args.tiny else 64
    report("search", search_time(MARKET_QUERY // scale, MARKET_GALLERY // scale, 2048 // scale * 4))
    result = {"device": name, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "stages": stages}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
