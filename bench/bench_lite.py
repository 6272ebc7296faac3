"""Lite DensePose inference throughput, and the cost of its training targets.

Inference: batched LiteEstimator.predict vs one image at a time, in this process on the same
random-init network (default architecture) and the same crops (Market-1501-like sizes around
128x64); the reference is the straightforward per-image call (batch_size=1). Prints images/s for
each and their ratio.

Training targets: soft_targets (scattered sums) vs the straightforward one-hot volume pooled with
avg_pool2d, on one default training batch of labels (16 x 128 x 64, factor 2); ms per batch and ratio.

    .venv/bin/python bench/bench_lite.py [--images 512] [--batch-size 64] [--width 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from reid.densepose.lite import LiteArch, LiteEstimator, build_model
from reid.densepose.lite_train import soft_targets
from reid.parts import N_CLASSES, N_PARTS


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(128, 64), (128, 64), (160, 72), (110, 50)]
    return [rng.integers(0, 256, size=(*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


def best_seconds(fn, repeats: int) -> float:
    """Fastest of `repeats` timed calls (the machine is shared; the best pass is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def images_per_second(estimator: LiteEstimator, images: list[np.ndarray], repeats: int = 3) -> float:
    estimator.predict(images[: 2 * estimator.batch_size], [])  # warm-up: first calls per shape are slow
    return len(images) / best_seconds(lambda: estimator.predict(images, []), repeats)


def pooled_one_hot_targets(parts: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                           factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: soft_targets as a one-hot volume of every part, average-pooled."""
    onehot = F.one_hot(parts.long(), N_CLASSES).permute(0, 3, 1, 2).float()
    shares = F.avg_pool2d(onehot, factor)
    fg = onehot[:, 1:]
    uv_sum = F.avg_pool2d(torch.cat([fg * u[:, None], fg * v[:, None]], 1), factor)
    b, _, h, w = shares.shape
    return shares, uv_sum.view(b, 2, N_PARTS, h, w) / shares[:, None, 1:].clamp(min=1e-6)


def ms_per_call(fn, repeats: int = 20) -> float:
    fn()  # warm-up
    return 1000 * best_seconds(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--input", type=int, nargs=2, default=(128, 64), metavar=("H", "W"),
                        help="network input size (default profile: 128 64)")
    args = parser.parse_args()

    torch.manual_seed(0)
    arch = LiteArch(width=args.width, input_height=args.input[0], input_width=args.input[1])
    model = build_model(arch)
    device = torch.device("cpu")
    images = crops(args.images)
    batched = images_per_second(LiteEstimator(model, arch, device, args.batch_size, progress=False), images)
    single = images_per_second(LiteEstimator(model, arch, device, 1, progress=False), images[: max(64, args.images // 4)])
    print(f"lite densepose inference, input {arch.input_height}x{arch.input_width}, width {arch.width}, "
          f"{torch.get_num_threads()} threads")
    print(f"  per-image reference : {single:8.1f} images/s")
    print(f"  batched (bs={args.batch_size:<4d})    : {batched:8.1f} images/s")
    print(f"  ratio               : {batched / single:8.2f}x")

    g = torch.Generator().manual_seed(0)
    parts = torch.randint(0, N_CLASSES, (16, 128, 64), generator=g, dtype=torch.uint8)
    u, v = torch.rand(16, 128, 64, generator=g), torch.rand(16, 128, 64, generator=g)
    ours, reference = (ms_per_call(lambda f=f: f(parts, u, v, 2)) for f in (soft_targets, pooled_one_hot_targets))
    print("soft training targets, one batch of 16 x 128 x 64 labels -> 64 x 32 cells")
    print(f"  one-hot + avg_pool reference : {reference:7.2f} ms")
    print(f"  soft_targets (scatter)       : {ours:7.2f} ms")
    print(f"  ratio                        : {reference / ours:7.2f}x faster")


if __name__ == "__main__":
    main()
