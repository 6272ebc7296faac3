"""P x K sampler: batch structure, rank disjointness, equal lengths, determinism per (seed, epoch)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reid.data.samplers import PKSampler


def labels_with_uneven_counts(n_ids: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, n_ids)  # some identities have fewer than K images
    labels = np.repeat(np.arange(n_ids), counts)
    return rng.permutation(labels)


def test_batches_hold_p_identities_with_k_images_each() -> None:
    labels = labels_with_uneven_counts()
    sampler = PKSampler(labels, p=4, k=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert len(batch) == 16 and len(counts) == 4 and set(counts.values()) == {4}
    # identities with < K images are sampled with replacement and still appear
    rare = [pid for pid, n in Counter(labels.tolist()).items() if n < 4]
    seen = {int(labels[i]) for b in batches for i in b}
    assert rare and set(rare) & seen


def test_ranks_get_disjoint_identities_and_equal_batch_counts() -> None:
    labels = labels_with_uneven_counts(n_ids=41)
    samplers = [PKSampler(labels, p=3, k=2, seed=5, rank=r, world_size=3) for r in range(3)]
    for epoch in range(3):
        pid_sets = []
        for s in samplers:
            s.set_epoch(epoch)
            pid_sets.append({int(labels[i]) for b in s for i in b})
        assert len({len(s) for s in samplers}) == 1
        assert not (pid_sets[0] & pid_sets[1] or pid_sets[0] & pid_sets[2] or pid_sets[1] & pid_sets[2])


def test_deterministic_per_seed_and_epoch_and_different_across_epochs() -> None:
    labels = labels_with_uneven_counts()
    a, b = PKSampler(labels, p=4, k=2, seed=7), PKSampler(labels, p=4, k=2, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(4)
    assert list(a) != first
    c = PKSampler(labels, p=4, k=2, seed=8)
    c.set_epoch(3)
    assert list(c) != first


def test_each_image_used_at_most_once_when_identities_have_enough_images() -> None:
    labels = np.repeat(np.arange(10), 8)
    sampler = PKSampler(labels, p=5, k=4)
    used = [i for b in sampler for i in b]
    # 20 chunks of 4; batches stop once fewer than P identities have chunks left (torchreid's rule)
    assert len(used) == len(set(used)) and len(sampler) in (3, 4)


def test_too_few_identities_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="identities cannot fill P=4 per batch on 2 rank"):
        PKSampler(np.arange(6), p=4, k=2, world_size=2)
