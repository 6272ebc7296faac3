"""bf16 autocast on the CPU: one training step of each model, bf16 autocast vs full precision.

Measured because the default run's budget is CPU time: on a CPU with native bf16 (AVX512-BF16 or
AMX; oneDNN kernels) autocast could buy a larger input size or a longer pretraining for the same
minutes. The engine autocasts on CUDA only (`amp`), so this bench is the evidence for, or against,
extending it to the CPU. Same step as bench_train.py's per-model costs (forward, losses, backward,
Adam) on random inputs, best of `--repeats` (fp32 first, then bf16, then bf16 in the channels_last
layout, which the engine uses on CUDA only: reid.device.memory_format). Prints seconds per
step of each, fp32 / bf16 (above 1: bf16 is faster) and bf16 / bf16+channels_last.

    .venv/bin/python bench/bench_amp.py [--sizes 64x32 96x48] [--models baseline dsa] [--repeats 4]
"""

from __future__ import annotations

import argparse

import torch
from bench_train import step_seconds

from reid.device import native_cpu_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64x32", "96x48"])
    parser.add_argument("--models", nargs="+", default=["baseline", "dsa"])
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    device = torch.device("cpu")
    print(f"CPU, {torch.get_num_threads()} threads, native bf16: {native_cpu_bf16()}, batch {args.p}x{args.k}, "
          f"best of {args.repeats}")
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split("x"))
        for name in args.models:
            fp32 = step_seconds(name, size, 12, args.p, args.k, device, args.repeats)
            bf16 = step_seconds(name, size, 12, args.p, args.k, device, args.repeats, torch.bfloat16)
            nhwc = step_seconds(name, size, 12, args.p, args.k, device, args.repeats, torch.bfloat16, True)
            print(f"  {size_text:6s} {name:10s} fp32 {fp32:6.3f}  bf16 {bf16:6.3f}  bf16+channels_last {nhwc:6.3f} "
                  f"s/step  fp32 / bf16 = {fp32 / bf16:.2f}  bf16 / bf16+channels_last = {bf16 / nhwc:.2f}")


if __name__ == "__main__":
    main()
