import math

import pytest
import torch

from reid.losses import batch_hard_triplet, pairwise_euclidean, smoothed_cross_entropy


def reference_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Straightforward loops: hardest positive / negative per anchor, skipping anchors lacking either."""
    terms = []
    for a in range(len(labels)):
        pos = [torch.dist(features[a], features[p]) for p in range(len(labels))
               if p != a and labels[p] == labels[a]]
        neg = [torch.dist(features[a], features[n]) for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            terms.append(torch.clamp(max(pos) - min(neg) + margin, min=0.0))
    return torch.stack(terms).mean() if terms else torch.tensor(0.0, dtype=features.dtype)


def reference_smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    n_classes = logits.shape[1]
    logp = torch.log_softmax(logits, dim=1)
    target = torch.full_like(logp, eps / n_classes)
    target[torch.arange(len(labels)), labels] += 1.0 - eps
    return -(target * logp).sum(1).mean()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_matches_reference(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (12,), generator=g)
    assert torch.allclose(smoothed_cross_entropy(logits, labels, eps), reference_smoothed_ce(logits, labels, eps))


@pytest.mark.parametrize("labels", [
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],      # P x K
    [0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6],      # some anchors without a positive
    [3, 1, 3, 1, 1, 7, 7, 3, 2, 2, 1, 3],      # unsorted
])
@pytest.mark.parametrize("margin", [0.0, 0.3, 5.0])
def test_batch_hard_triplet_matches_loop_reference(labels, margin):
    g = torch.Generator().manual_seed(len(labels) + int(margin * 10))
    features = torch.randn(len(labels), 16, generator=g, dtype=torch.float64)
    labels = torch.tensor(labels)
    got = batch_hard_triplet(features, labels, margin)
    assert torch.allclose(got, reference_triplet(features, labels, margin), atol=1e-9)


def test_triplet_without_valid_anchor_is_zero_and_differentiable():
    features = torch.randn(4, 8, requires_grad=True)
    for labels in (torch.zeros(4, dtype=torch.long), torch.arange(4)):  # no negative / no positive anywhere
        loss = batch_hard_triplet(features, labels, 0.3)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.all(features.grad == 0)


def test_triplet_zero_when_identities_are_separated_and_positive_otherwise():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    features = centres[labels] + torch.tensor([[0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])
    assert batch_hard_triplet(features, labels, 0.3).item() == 0.0
    swapped = features[[0, 2, 1, 3]]  # now each anchor's positive is far, its negative near
    assert batch_hard_triplet(swapped, labels, 0.3).item() > 9.0


def test_triplet_gradient_finite_with_duplicate_features():
    features = torch.ones(6, 4, requires_grad=True)  # all distances 0
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    loss = batch_hard_triplet(features, labels, 0.3)
    assert math.isclose(loss.item(), 0.3, abs_tol=1e-5)
    loss.backward()
    assert torch.isfinite(features.grad).all()


def test_pairwise_euclidean_matches_cdist():
    x = torch.randn(9, 5, dtype=torch.float64)
    assert torch.allclose(pairwise_euclidean(x), torch.cdist(x, x), atol=1e-6)


def test_triplet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        batch_hard_triplet(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
