import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reid.densepose.agreement import (
    ALLOWED_PARTS,
    N_LANDMARKS,
    BodyAgreement,
    keypoint_counts,
    mask_iou,
    read_reference,
)
from reid.io import write_image
from reid.parts import encode_iuv

ROOT = Path(__file__).resolve().parents[1]
NOSE, LEFT_HIP, LEFT_KNEE, LEFT_WRIST = 0, 23, 25, 15


def no_pose() -> np.ndarray:
    return np.full((N_LANDMARKS, 3), np.nan, np.float32)


def pose(**points: tuple[float, float, float]) -> np.ndarray:
    marks = np.zeros((N_LANDMARKS, 3), np.float32)  # visibility 0: every other keypoint is hidden
    index = {"nose": NOSE, "hip": LEFT_HIP, "knee": LEFT_KNEE, "wrist": LEFT_WRIST}
    for name, point in points.items():
        marks[index[name]] = point
    return marks


def torso_and_legs() -> np.ndarray:
    """16 x 8 part map: rows 2-7 torso front (2), rows 8-15 upper leg L front (10), column 0 background."""
    parts = np.zeros((16, 8), np.int64)
    parts[2:8, 1:] = 2
    parts[8:, 1:] = 10
    return parts


def test_every_landmark_may_lie_on_some_part_and_never_on_background():
    assert ALLOWED_PARTS.shape == (N_LANDMARKS, 25)
    assert not ALLOWED_PARTS[:, 0].any()
    assert ALLOWED_PARTS[:, 1:].any(axis=1).all()
    assert set(np.flatnonzero(ALLOWED_PARTS[NOSE])) == {23, 24}
    assert set(np.flatnonzero(ALLOWED_PARTS[LEFT_KNEE])) == set(range(7, 15))
    assert set(np.flatnonzero(ALLOWED_PARTS[LEFT_HIP])) == {1, 2, 7, 8, 9, 10}


def test_mask_iou_counts_overlap_over_union():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    with pytest.raises(ValueError, match="sizes differ"):
        mask_iou(a, np.zeros((4, 5), bool))


def test_keypoints_count_only_when_visible_and_agree_only_on_their_body_groups():
    parts = torso_and_legs()
    marks = pose(hip=(4, 8, 0.9),        # on torso / upper leg: agrees
                 nose=(4, 4, 0.9),       # on the torso: on the body, wrong part
                 knee=(0, 12, 0.9),      # on background... but radius 1 reaches the upper leg at column 1
                 wrist=(4, 4, 0.3))      # not visible enough: ignored
    assert keypoint_counts(parts, marks, radius=1) == (3, 3, 2)
    assert keypoint_counts(parts, marks, radius=0) == (3, 2, 1)  # the knee is off the body without tolerance


def test_keypoints_outside_the_crop_or_without_a_pose_are_not_counted():
    parts = torso_and_legs()
    assert keypoint_counts(parts, no_pose()) == (0, 0, 0)
    assert keypoint_counts(parts, pose(hip=(8.5, 8, 1.0), knee=(3, -1, 1.0))) == (0, 0, 0)
    with pytest.raises(ValueError, match="landmarks"):
        keypoint_counts(parts, np.zeros((17, 3)))


def test_summary_averages_crops_and_pools_keypoints():
    parts = torso_and_legs()
    agreement = BodyAgreement(radius=0)
    agreement.update(parts, parts > 0, pose(hip=(4, 8, 1.0), nose=(4, 4, 1.0)))
    agreement.update(np.zeros_like(parts), parts > 0, no_pose())
    summary = agreement.summary()
    assert summary["n_crops"] == 2
    assert summary["mask_iou"] == pytest.approx(0.5)  # 1 and 0
    assert summary["body_share"] == pytest.approx(0.5 * (parts > 0).mean())
    assert summary["pose_found"] == 0.5
    assert (summary["n_keypoints"], summary["keypoint_on_body"], summary["keypoint_part_agreement"]) == (2, 1.0, 0.5)
    off_body = BodyAgreement(radius=0)
    off_body.update(parts, parts > 0, pose(hip=(4, 8, 1.0), nose=(4, 4, 1.0), knee=(0, 12, 1.0)))
    assert off_body.summary()["keypoint_part_agreement"] == pytest.approx(1 / 3)
    assert off_body.summary()["keypoint_part_agreement_on_body"] == pytest.approx(1 / 2)  # the knee is off the body
    with pytest.raises(ValueError, match="no crops"):
        BodyAgreement().summary()


def write_reference(path: Path, rows: list[tuple[str, np.ndarray, np.ndarray]]) -> Path:
    """The layout scripts/mediapipe_reference.py writes (it runs in mediapipe's environment, without reid)."""
    table = pa.table({
        "path": [r[0] for r in rows],
        "mask": pa.array([cv2.imencode(".png", r[1].astype(np.uint8) * 255)[1].tobytes() for r in rows], pa.binary()),
        "landmarks": pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate([r[2].ravel() for r in rows]), pa.float32()), N_LANDMARKS * 3),
    })
    pq.write_table(table, path)
    return path


def test_read_reference_returns_masks_and_landmarks_and_names_a_bad_file(tmp_path):
    mask = torso_and_legs() > 0
    marks = pose(hip=(4, 8, 1.0))
    refs = read_reference(write_reference(tmp_path / "ref.parquet", [("a.jpg", mask, marks), ("b.jpg", ~mask, no_pose())]))
    assert [r.path for r in refs] == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(refs[0].mask, mask)
    np.testing.assert_array_equal(refs[1].mask, ~mask)
    np.testing.assert_array_equal(refs[0].landmarks, marks)
    assert np.isnan(refs[1].landmarks).all()
    pq.write_table(pa.table({"path": ["a.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet.*mask"):
        read_reference(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match="mediapipe_reference"):
        read_reference(tmp_path / "none.parquet")


def test_script_scores_ground_truth_iuv_against_a_reference(tmp_path):
    # A synthetic-layout crop with its ground-truth IUV, scored by the oracle: the reference is the
    # truth's own body mask and a hip keypoint on it, so every measure is perfect.
    parts = torso_and_legs()
    (tmp_path / "query").mkdir()
    (tmp_path / "gt_iuv" / "query").mkdir(parents=True)
    write_image(tmp_path / "query" / "0001_c1s1_000001_00.jpg", np.full((16, 8, 3), 100, np.uint8))
    iuv = encode_iuv(parts.astype(np.uint8), np.full(parts.shape, 0.5, np.float32), np.full(parts.shape, 0.5, np.float32))
    cv2.imwrite(str(tmp_path / "gt_iuv" / "query" / "0001_c1s1_000001_00.png"), iuv)
    ref = write_reference(tmp_path / "ref.parquet", [("query/0001_c1s1_000001_00.jpg", parts > 0, pose(hip=(4, 8, 1.0)))])
    out = tmp_path / "agreement.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "body_agreement.py"), "--reference", str(ref),
                           "--root", str(tmp_path), "--densepose", "oracle", "--label", "truth", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    entry = json.loads(out.read_text())["truth"]
    assert (entry["mask_iou"], entry["keypoint_on_body"], entry["keypoint_part_agreement"]) == (1.0, 1.0, 1.0)
