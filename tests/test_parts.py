import numpy as np
import pytest

from reid import parts


def test_pairs_cover_parts_once():
    lr = [p for pair in parts.LEFT_RIGHT_PAIRS for p in pair]
    assert sorted(lr + [1, 2]) == list(range(1, 25))
    fb = [p for pair in parts.FRONT_BACK_PAIRS for p in pair]
    assert len(fb) == len(set(fb)) == 18


def test_merges_partition_all_parts():
    assert len(parts.FIRST_MERGE) == 13
    assert sorted(p for g in parts.FIRST_MERGE for p in g) == list(range(1, 25))
    assert sorted(p for g in parts.PART_GROUPS for p in g) == list(range(1, 25))
    second = parts.second_merge()
    assert len(second) == 8
    assert sorted(i for g in second for i in g) == list(range(13))
    for group, firsts in zip(parts.PART_GROUPS, second, strict=True):
        assert sorted(p for i in firsts for p in parts.FIRST_MERGE[i]) == sorted(group)


def test_groups_join_front_back_pairs():
    group_of = {p: gi for gi, g in enumerate(parts.PART_GROUPS) for p in g}
    for a, b in parts.FRONT_BACK_PAIRS + parts.LEFT_RIGHT_PAIRS:
        assert group_of[a] == group_of[b]


def test_mirror_part_is_involution_and_swaps_names():
    m = parts.MIRROR_PART
    assert np.array_equal(m[m], np.arange(25))
    assert m[0] == 0 and m[1] == 1 and m[2] == 2
    for a, b in parts.LEFT_RIGHT_PAIRS:
        na, nb = parts.PART_NAMES[a], parts.PART_NAMES[b]
        swapped = ["l" if t == "r" else "r" if t == "l" else t for t in na.split("_")]
        assert "_".join(swapped) == nb


def test_iuv_round_trip_and_background_zero():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 25, (20, 10))
    u, v = rng.random((20, 10)), rng.random((20, 10))
    iuv = parts.encode_iuv(p, u, v)
    assert iuv.dtype == np.uint8
    assert (iuv[p == 0] == 0).all()
    p2, u2, v2 = parts.decode_iuv(iuv)
    assert np.array_equal(p2, p)
    fg = p > 0
    assert np.abs(u2[fg] - u[fg]).max() <= 0.5 / 255 + 1e-6
    assert np.abs(v2[fg] - v[fg]).max() <= 0.5 / 255 + 1e-6


def test_iuv_rejects_bad_parts():
    with pytest.raises(ValueError, match="part indices"):
        parts.encode_iuv(np.array([[25]]), np.zeros((1, 1)), np.zeros((1, 1)))
    bad = np.zeros((2, 2, 3), np.uint8)
    bad[0, 0, 0] = 30
    with pytest.raises(ValueError, match="part index 30"):
        parts.decode_iuv(bad)


def test_dsap_cell_clamps():
    r, c = parts.dsap_cell(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.999, 0.0]), 32)
    assert r.tolist() == [0, 16, 31]
    assert c.tolist() == [31, 31, 0]


def test_atlas_layout():
    T = 8
    assert parts.atlas_shape(T) == (48, 32, 3)
    r, c = parts.atlas_tile_origin(np.array([1, 6, 7, 24]), T)
    assert r.tolist() == [0, 40, 0, 40] and c.tolist() == [0, 0, 8, 24]
    # inside a tile: column floor(U*T), row floor((1-V)*T), clamped
    rr, cc = parts.atlas_pixel(np.array([7]), np.array([1.0]), np.array([1.0]), T)
    assert rr.tolist() == [0] and cc.tolist() == [8 + T - 1]
    rr, cc = parts.atlas_pixel(np.array([1]), np.array([0.0]), np.array([0.0]), T)
    assert rr.tolist() == [T - 1] and cc.tolist() == [0]


def test_atlas_tile_as_dsap_matches_cell_formulas():
    T = 16
    atlas = np.random.default_rng(1).integers(0, 256, parts.atlas_shape(T), dtype=np.uint8)
    part = 9
    dsap = parts.atlas_tile_as_dsap(parts.atlas_tile(atlas, part))
    # Off-boundary (u, v): the DSAP cell and the atlas pixel of the same semantics hold the same colour.
    g = (np.arange(T) + 0.5) / T
    u, v = np.meshgrid(g, g, indexing="ij")
    dr, dc = parts.dsap_cell(u, v, T)
    ar, ac = parts.atlas_pixel(np.full(u.shape, part), u, v, T)
    assert np.array_equal(dsap[dr, dc], atlas[ar, ac])


def test_sample_atlas():
    T = 4
    atlas = np.zeros(parts.atlas_shape(T), np.uint8)
    atlas[..., 0] = np.arange(6 * T)[:, None]
    iuv = parts.encode_iuv(np.array([[0, 2]]), np.array([[0.0, 0.1]]), np.array([[0.0, 0.9]]))
    colours, mask = parts.sample_atlas(atlas, iuv)
    assert mask.tolist() == [[False, True]]
    # part 2 -> tile row 1 -> rows 4..7; V=0.9 -> row floor(0.1*4)=0 -> atlas row 4
    assert colours[:, 0].tolist() == [4]
