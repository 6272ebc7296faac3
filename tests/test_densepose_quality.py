import numpy as np
import pytest

from reid.densepose.quality import CoverageStats, IUVQuality, part_confusion, part_iou
from reid.parts import N_CLASSES


def iuv(parts, u, v):
    return np.stack([np.asarray(parts), np.asarray(u), np.asarray(v)], -1).astype(np.uint8)


def test_confusion_rows_are_ground_truth():
    conf = part_confusion(np.array([[1, 2], [0, 2]]), np.array([[1, 1], [0, 2]]))
    assert conf.shape == (N_CLASSES, N_CLASSES) and conf.sum() == 4
    assert conf[1, 1] == 1 and conf[1, 2] == 1 and conf[0, 0] == 1 and conf[2, 2] == 1
    with pytest.raises(ValueError, match="shape"):
        part_confusion(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_hand_computed_miou_and_uv_error():
    gt = iuv([[1, 1], [0, 2]], [[0, 100], [0, 200]], [[50, 50], [0, 10]])
    pred = iuv([[1, 2], [0, 2]], [[51, 100], [0, 180]], [[50, 0], [0, 13]])
    q = IUVQuality()
    q.update(pred, gt)
    s = q.summary()
    # IoU: background 1/1, part 1: 1/2, part 2: 1/2; parts 3..24 absent everywhere -> left out.
    assert s["part_miou"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert s["part_miou_fg"] == pytest.approx(0.5)
    assert s["n_parts_seen"] == 2
    # Correct foreground pixels: (0, 0) part 1 and (1, 1) part 2.
    assert s["u_error"] == pytest.approx((51 + 20) / 255 / 2, abs=1e-6)
    assert s["v_error"] == pytest.approx((0 + 3) / 255 / 2, abs=1e-6)
    assert s["uv_error"] == pytest.approx((s["u_error"] + s["v_error"]) / 2)
    assert s["n_correct_fg_pixels"] == 2


def test_perfect_prediction_scores_one_and_zero():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (2, 20, 10, 3), dtype=np.uint8)
    gt[..., 0] = rng.integers(0, 25, (2, 20, 10))
    q = IUVQuality()
    for g in gt:
        q.update(g.copy(), g)
    s = q.summary()
    assert s["part_miou"] == 1.0 and s["part_miou_fg"] == 1.0 and s["uv_error"] == 0.0 and s["n_images"] == 2


def test_iou_is_nan_only_for_absent_classes():
    conf = np.zeros((N_CLASSES, N_CLASSES), np.int64)
    conf[0, 0] = 5
    conf[3, 4] = 2
    iou = part_iou(conf)
    assert iou[0] == 1.0 and iou[3] == 0.0 and iou[4] == 0.0
    assert np.isnan(iou[5])


def test_quality_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in shape"):
        IUVQuality().update(np.zeros((4, 2, 3), np.uint8), np.zeros((4, 3, 3), np.uint8))


def test_coverage_stats():
    c = CoverageStats()
    a = np.zeros((4, 5, 3), np.uint8)
    a[:2, :, 0] = 7  # half the pixels
    c.update(a, True)
    c.update(np.zeros((2, 2, 3), np.uint8), False)
    s = c.summary()
    assert s["n_images"] == 2 and s["n_found"] == 1
    assert s["found_fraction"] == 0.5 and s["body_pixel_fraction"] == pytest.approx(0.25)
