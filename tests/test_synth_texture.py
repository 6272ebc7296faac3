"""Procedural identities: atlas layout, details confined to their chart, hard-negative siblings."""

import dataclasses

import numpy as np
import pytest

from reid.parts import PART_NAMES, atlas_shape, atlas_tile
from reid.synth import Outfit, make_atlas, sample_outfit, sibling
from reid.synth.texture import PALETTE, SKIN

PART = {name: i for i, name in PART_NAMES.items()}


def _atlas(outfit: Outfit, tile: int = 16) -> np.ndarray:
    return make_atlas(outfit, tile, np.random.default_rng(0))  # same noise for both atlases compared


def _changed_parts(a: np.ndarray, b: np.ndarray) -> set[str]:
    return {name for i, name in PART_NAMES.items() if not np.array_equal(atlas_tile(a, i), atlas_tile(b, i))}


def test_atlas_has_the_layout_shape():
    atlas = make_atlas(sample_outfit(np.random.default_rng(1)), 32, np.random.default_rng(1))
    assert atlas.shape == atlas_shape(32) and atlas.dtype == np.uint8
    with pytest.raises(ValueError, match="tile"):
        make_atlas(Outfit(), 2, np.random.default_rng(0))


def test_logo_only_on_torso_front_and_backpack_only_on_torso_back():
    plain = Outfit(top=3, logo="none", back="none", logo_color=1, back_color=5)
    assert _changed_parts(_atlas(plain), _atlas(dataclasses.replace(plain, logo="circle"))) == {"torso_front"}
    assert _changed_parts(_atlas(plain), _atlas(dataclasses.replace(plain, back="backpack"))) == {"torso_back"}


def test_sleeves_and_trousers_reach_the_right_segments():
    outfit = Outfit(top=5, sleeve=0.15, leg_cover=0.45, skin=0)
    atlas = _atlas(outfit).astype(float)
    skin = SKIN[0]
    # short sleeves: the forearm is bare skin; shorts: the lower leg is bare skin
    assert np.abs(atlas_tile(atlas, PART["lower_arm_l_front"]).mean((0, 1)) - skin).max() < 6
    assert np.abs(atlas_tile(atlas, PART["lower_leg_r_back"]).mean((0, 1)) - skin).max() < 6
    long = _atlas(dataclasses.replace(outfit, sleeve=1.0)).astype(float)
    assert np.abs(atlas_tile(long, PART["lower_arm_l_front"]).mean((0, 1)) - PALETTE[5]).max() < 6


def test_siblings_differ_in_exactly_one_detail_and_colours_collide_across_people():
    rng = np.random.default_rng(0)
    outfits = [sample_outfit(rng) for _ in range(100)]
    for outfit in outfits[:30]:
        sib = sibling(outfit, rng)
        diff = [f.name for f in dataclasses.fields(Outfit) if getattr(sib, f.name) != getattr(outfit, f.name)]
        assert len(diff) == 1
    tops = [o.top for o in outfits]
    assert max(tops.count(c) for c in set(tops)) >= 10  # a shared palette: many people wear the same colour
