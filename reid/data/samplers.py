"""P x K identity sampler: every batch holds P identities with K images each (SPEC §9).

Distributed-aware without any communication: every rank computes the same epoch plan from
(seed, epoch) — identities split over ranks, batches built per rank — and keeps its own share.
All ranks get the same number of batches (the plan is cut to the shortest rank), and ranks never
share an identity within an epoch, so a batch-hard triplet never sees the same pid on two GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Batch sampler (for ``DataLoader(batch_sampler=...)``) yielding lists of P*K dataset indices.

    Per epoch and identity, its images are shuffled and cut into chunks of K (the remainder is
    dropped as in torchreid's RandomIdentitySampler; an identity with fewer than K images is
    sampled with replacement up to K). Batches then repeatedly take P random identities that
    still have chunks. Call ``set_epoch`` before each epoch; the plan depends only on
    (seed, epoch, world_size).
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, p: int = 16, k: int = 4, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"PKSampler: p and k must be >= 1, got p={p}, k={k}")
        if not 0 <= rank < world_size:
            raise ValueError(f"PKSampler: rank {rank} outside world_size {world_size}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError("PKSampler: labels must be a non-empty 1-D sequence")
        self.p, self.k, self.seed, self.rank, self.world_size = p, k, seed, rank, world_size
        self.epoch = 0
        # Sorted identities and their index lists: the plan must not depend on input order quirks.
        self.pids = np.unique(labels)
        self.index_by_pid = [np.flatnonzero(labels == pid) for pid in self.pids]
        if len(self.pids) < p * world_size:
            raise ValueError(f"PKSampler: {len(self.pids)} identities cannot fill P={p} per batch "
                             f"on {world_size} rank(s) (need at least {p * world_size})")
        self._cached: tuple[int, list[list[list[int]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> list[list[list[int]]]:
        """Batches for every rank this epoch (same on all ranks), cut to equal length."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.pids))
        plans = [self._rank_batches(order[r::self.world_size], rng) for r in range(self.world_size)]
        n = min(len(b) for b in plans)
        plans = [b[:n] for b in plans]
        self._cached = (self.epoch, plans)
        return plans

    def _rank_batches(self, pid_slots: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        chunks: dict[int, list[np.ndarray]] = {}
        for slot in pid_slots:
            idx = self.index_by_pid[slot]
            idx = rng.choice(idx, size=self.k, replace=True) if len(idx) < self.k else rng.permutation(idx)
            n_chunks = len(idx) // self.k
            chunks[int(slot)] = [idx[i * self.k:(i + 1) * self.k] for i in range(n_chunks)]
        batches = []
        available = sorted(chunks)
        while len(available) >= self.p:
            chosen = rng.choice(available, size=self.p, replace=False)
            batches.append([int(i) for slot in chosen for i in chunks[int(slot)].pop()])
            available = [s for s in available if chunks[s]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._plan()[self.rank])

    def __len__(self) -> int:
        return len(self._plan()[self.rank])
