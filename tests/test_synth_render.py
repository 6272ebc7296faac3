"""The renderer tells the truth: RGB agrees with the atlas at the ground-truth IUV, anatomy and
DensePose charts are where they belong, left/right charts are mirror-consistent."""

import numpy as np
import pytest
from scipy import ndimage

from reid.parts import LEFT_RIGHT_PAIRS, MIRROR_PART, PART_GROUPS, PART_NAMES, atlas_shape, decode_iuv, sample_atlas
from reid.synth import Pose, View, make_atlas, render_person, sample_outfit, sample_pose

PART = {name: i for i, name in PART_NAMES.items()}
STILL = Pose(phase=-np.pi / 3, leg_swing=0.0, arm_swing=0.0, head_yaw=0.0)  # left/right symmetric


def _atlas(seed=0, tile=32):
    rng = np.random.default_rng(seed)
    return make_atlas(sample_outfit(rng), tile, rng)


def _interior(parts: np.ndarray) -> np.ndarray:
    """Foreground pixels whose 3x3 neighbourhood holds one part only (not on a part boundary)."""
    hi = ndimage.maximum_filter(parts, size=3, mode="nearest")
    lo = ndimage.minimum_filter(parts, size=3, mode="nearest")
    return (parts > 0) & (hi == lo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unshaded_pixels_equal_the_atlas_at_their_iuv(seed):
    rng = np.random.default_rng(seed)
    atlas = _atlas(seed)
    view = View(azimuth=float(rng.uniform(0, 360)), elevation=float(rng.uniform(0, 25)))
    rgb, iuv = render_person(atlas, pose=sample_pose(rng), view=view, size=(128, 64), shading=False)
    assert rgb.shape == iuv.shape == (128, 64, 3) and rgb.dtype == iuv.dtype == np.uint8
    colours, mask = sample_atlas(atlas, iuv)
    parts = iuv[..., 0].astype(int)
    inner = _interior(parts)[mask]
    assert inner.sum() > 300
    close = (np.abs(rgb[mask].astype(int) - colours.astype(int)) <= 8).all(axis=1)
    assert close[inner].mean() >= 0.95


def test_shaded_render_differs_from_flat_but_keeps_the_same_iuv():
    atlas = _atlas(3)
    flat, iuv_flat = render_person(atlas, pose=STILL, shading=False)
    shaded, iuv_shaded = render_person(atlas, pose=STILL, shading=True)
    np.testing.assert_array_equal(iuv_flat, iuv_shaded)
    fg = iuv_flat[..., 0] > 0
    assert np.abs(flat[fg].astype(int) - shaded[fg].astype(int)).mean() > 5


def test_anatomy_top_to_bottom():
    _, iuv = render_person(_atlas(), pose=STILL, view=View(azimuth=0), shading=False)
    parts = iuv[..., 0]
    rows = np.arange(parts.shape[0])[:, None] * np.ones_like(parts)

    def mean_row(group):
        return rows[np.isin(parts, group)].mean()

    head, torso = mean_row([PART["head_l"], PART["head_r"]]), mean_row([PART["torso_front"]])
    upper_legs, lower_legs = mean_row(PART_GROUPS[1]), mean_row(PART_GROUPS[2])
    feet = mean_row([PART["foot_l"], PART["foot_r"]])
    assert head < torso < upper_legs < lower_legs < feet


@pytest.mark.parametrize("azimuth,sees,hidden", [(0, "torso_front", "torso_back"), (180, "torso_back", "torso_front")])
def test_front_view_shows_torso_front_and_back_view_the_back(azimuth, sees, hidden):
    _, iuv = render_person(_atlas(), pose=STILL, view=View(azimuth=azimuth), shading=False)
    parts = iuv[..., 0]
    assert (parts == PART[sees]).sum() > 300
    assert (parts == PART[hidden]).sum() == 0


@pytest.mark.parametrize("azimuth", [0, 180])
def test_persons_right_side_is_on_the_image_left_in_a_frontal_view(azimuth):
    _, iuv = render_person(_atlas(), pose=STILL, view=View(azimuth=azimuth), shading=False)
    parts = iuv[..., 0]
    cols = np.arange(parts.shape[1])[None, :] * np.ones_like(parts)
    front = azimuth == 0
    for right, left in [("hand_r", "hand_l"), ("upper_arm_r_front" if front else "upper_arm_r_back",
                                                "upper_arm_l_front" if front else "upper_arm_l_back"),
                        ("head_r", "head_l"), ("foot_r", "foot_l")]:
        c_right, c_left = cols[parts == PART[right]].mean(), cols[parts == PART[left]].mean()
        assert (c_right < c_left) == front, (right, left)


@pytest.mark.parametrize("azimuth", [0, 180, 30])
def test_left_right_charts_are_mirror_consistent(azimuth):
    # A left/right symmetric pose seen from azimuth a, mirrored, is the same pose seen from -a with
    # left/right labels swapped and identical (u, v).
    atlas = _atlas()
    _, iuv = render_person(atlas, pose=STILL, view=View(azimuth=azimuth), shading=False)
    _, iuv_m = render_person(atlas, pose=STILL, view=View(azimuth=-azimuth), shading=False)
    flipped = iuv_m[:, ::-1]
    parts, u, v = decode_iuv(iuv)
    parts_f, u_f, v_f = decode_iuv(flipped)
    fg = parts > 0
    same = MIRROR_PART[parts_f] == parts
    assert same[fg].mean() > 0.97
    paired = np.isin(parts, [p for pair in LEFT_RIGHT_PAIRS for p in pair])  # the torso is its own mirror (v -> 1-v)
    both = fg & same & paired
    assert both.sum() > 500
    assert (np.abs(u - u_f)[both] <= 2 / 255).mean() > 0.97
    assert (np.abs(v - v_f)[both] <= 2 / 255).mean() > 0.97


def test_u_runs_proximal_to_distal_on_limbs():
    _, iuv = render_person(_atlas(), pose=STILL, view=View(azimuth=0), shading=False)
    parts, u, _ = decode_iuv(iuv)
    rows = np.arange(parts.shape[0])[:, None] * np.ones_like(parts)
    for name in ("upper_leg_r_front", "lower_leg_l_front", "upper_arm_l_front", "lower_arm_r_front"):
        m = parts == PART[name]
        assert np.corrcoef(rows[m], u[m])[0, 1] > 0.9, name  # hanging limbs: distal is lower


def test_render_is_deterministic_and_seed_draws_the_pose():
    atlas = _atlas()
    a = render_person(atlas, seed=5)
    b = render_person(atlas, seed=5)
    c = render_person(atlas, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_background_shows_where_there_is_no_body_and_bad_inputs_fail():
    atlas = _atlas()
    bg = np.full((64, 32, 3), (10, 200, 30), np.uint8)
    rgb, iuv = render_person(atlas, pose=STILL, size=(64, 32), background=bg)
    assert (rgb[iuv[..., 0] == 0] == (10, 200, 30)).all(axis=1).mean() > 0.9
    with pytest.raises(ValueError, match="atlas"):
        render_person(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="background"):
        render_person(atlas, size=(64, 32), background=np.zeros((10, 10, 3), np.uint8))
    assert atlas.shape == atlas_shape(32)
