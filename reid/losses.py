"""reID losses: label-smoothed cross-entropy and batch-hard triplet (Hermans et al. 2017).

Both are plain functions on tensors; models weight and name them (reid.modeling).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor


def smoothed_cross_entropy(logits: Tensor, labels: Tensor, epsilon: float = 0.1) -> Tensor:
    """Mean cross-entropy against (1 - eps) one-hot + eps / C uniform targets (Szegedy et al.)."""
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)


def pairwise_euclidean(x: Tensor) -> Tensor:
    """[B, B] Euclidean distances; clamped before the sqrt so the gradient stays finite at 0."""
    # At least fp32, autocast off: squared norms overflow fp16 and cancel badly in bf16.
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    device = x.device.type
    with torch.autocast(device_type=device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
        sq = x.pow(2).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss on Euclidean distances, averaged over anchors that have both
    a positive (another sample of their label) and a negative.

    For each such anchor: relu(max_pos d(a, p) - min_neg d(a, n) + margin). A batch where no
    anchor qualifies (e.g. one identity, or all labels distinct) gives a zero that still
    belongs to the graph, so the caller can add and backpropagate it unconditionally.
    """
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"batch_hard_triplet needs features [B, D] and labels [B], got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    dist = pairwise_euclidean(features)
    same = labels[:, None] == labels[None, :]
    self_pair = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~self_pair
    negative = ~same
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(1)
    valid = positive.any(1) & negative.any(1)
    # Invalid anchors have an infinite term; where() drops it without a host sync.
    per_anchor = torch.where(valid, F.relu(hardest_pos - hardest_neg + margin), torch.zeros_like(hardest_pos))
    return per_anchor.sum() / valid.sum().clamp_min(1)
