"""Memory layout on the CPU in fp32: one training step per backbone, channels_last (NHWC) vs contiguous (NCHW).

Measured because reid.device.memory_format picks the layout: NHWC on CUDA, and on the CPU only in fp32
(under bf16 autocast it was not reliably faster: bench_amp.py). EfficientNet-Lite0's depthwise
convolutions are where NCHW hurts most. Same step as bench_train.py (forward, losses, backward, Adam) of
the `baseline` model on random inputs, P x K images, best of `--repeats`, the two layouts alternating
so that load on the machine hits both alike. Prints seconds per step and NCHW / NHWC (above 1: NHWC is
faster).

    .venv/bin/python bench/bench_layout.py [--backbones efficientnet_lite0 resnet18] [--sizes 128x64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train import plain_step

from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig


def step_times(backbone: str, size: tuple[int, int], p: int, k: int, repeats: int) -> dict[str, float]:
    """Best seconds per step for each layout, the layouts alternating step by step."""
    runs = {}
    for name, layout in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        torch.manual_seed(0)
        model = build_model("baseline", 100, ModelConfig(backbone=backbone, pretrained=None)).train()
        model = model.to(memory_format=layout)
        batch = {"image": torch.randn(p * k, 3, *size).contiguous(memory_format=layout),
                 "label": torch.arange(p).repeat_interleave(k)}
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-4), batch)
        plain_step(*runs[name])  # warm-up: allocators and kernels
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            plain_step(*run)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet18"])
    parser.add_argument("--sizes", nargs="+", default=["128x64"])
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads, fp32, baseline, batch {args.p}x{args.k}, best of {args.repeats}")
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split("x"))
        for backbone in args.backbones:
            t = step_times(backbone, size, args.p, args.k, args.repeats)
            print(f"  {size_text:7s} {backbone:18s} NCHW {t['nchw']:6.3f}  NHWC {t['nhwc']:6.3f} s/step  "
                  f"NCHW / NHWC = {t['nchw'] / t['nhwc']:.2f}")


if __name__ == "__main__":
    main()
