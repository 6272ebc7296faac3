"""Batch-hard triplet: vectorised (reid.losses) vs a per-anchor loop reference, forward + backward.

    .venv/bin/python bench/bench_losses.py [--dim 1024] [--repeats 5]

Prints the time of each and the speed-up ratio for P x K batches; checks both give the same loss.
"""

from __future__ import annotations

import argparse
import time

import torch

from reid.losses import batch_hard_triplet


def loop_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Reference: for each anchor, hardest positive and negative by scanning the batch."""
    terms = []
    for a in range(len(labels)):
        d = (features - features[a]).pow(2).sum(1).clamp_min(1e-12).sqrt()
        pos = (labels == labels[a]) & (torch.arange(len(labels)) != a)
        neg = labels != labels[a]
        if pos.any() and neg.any():
            terms.append(torch.relu(d[pos].max() - d[neg].min() + margin))
    return torch.stack(terms).mean()


def timed(fn, features: torch.Tensor, labels: torch.Tensor, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), 0.0
    for _ in range(repeats):
        x = features.clone().requires_grad_(True)
        start = time.perf_counter()
        loss = fn(x, labels, 0.3)
        loss.backward()
        best = min(best, time.perf_counter() - start)
        value = loss.item()
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'P x K':>8} {'loop ms':>9} {'vectorised ms':>14} {'speed-up':>9}")
    for p, k in ((16, 4), (32, 4)):
        labels = torch.arange(p).repeat_interleave(k)
        features = torch.randn(p * k, args.dim)
        t_loop, v_loop = timed(loop_triplet, features, labels, args.repeats)
        t_vec, v_vec = timed(batch_hard_triplet, features, labels, args.repeats)
        assert abs(v_loop - v_vec) < 1e-3 * max(1.0, abs(v_loop)), (v_loop, v_vec)
        print(f"{f'{p}x{k}':>8} {t_loop * 1e3:9.2f} {t_vec * 1e3:14.2f} {t_loop / t_vec:8.1f}x")


if __name__ == "__main__":
    main()
