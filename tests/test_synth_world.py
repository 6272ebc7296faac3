"""The exported worlds: Market-1501 layout and PIT layout, determinism, difficulty, config errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid.config import ConfigError, from_mapping
from reid.io import decode_raw, read_image
from reid.parts import PART_NAMES
from reid.synth import PitConfig, View, WorldConfig, export_market, export_pit, make_atlas, render_person
from reid.synth.__main__ import main as synth_cli
from reid.synth.world import MARKET_NAME, make_people

TINY = WorldConfig(seed=3, n_train=3, n_test=4, n_cameras=3, cameras_per_identity=(2, 3), images_per_identity=6,
                   n_distractors=3, n_junk=3, height=64, width=32, tile=16)
TINY_PIT = PitConfig(seed=3, n_textures=3, poses_per_texture=2)
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "market"
    export_market(out, TINY, progress=False, workers=2)
    return out


@pytest.fixture(scope="module")
def pit(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "pit"
    export_pit(out, TINY_PIT, progress=False)
    return out


def _records(root: Path, folder: str) -> list[tuple[int, int, Path]]:
    out = []
    for path in sorted((root / folder).glob("*.jpg")):
        match = MARKET_NAME.match(path.stem)
        assert match, path.name
        out.append((int(match.group(1)), int(match.group(2)), path))
    return out


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_market_layout_names_junk_distractors_and_splits(market):
    train, gallery, query = (_records(market, f) for f in FOLDERS)
    train_pids = {pid for pid, _, _ in train}
    test_pids = {pid for pid, _, _ in gallery + query} - {0, -1}
    assert train_pids and test_pids and not (train_pids & test_pids)
    assert not ({0, -1} & train_pids) and not ({0, -1} & {pid for pid, _, _ in query})
    assert sum(pid == 0 for pid, _, _ in gallery) == TINY.n_distractors
    assert sum(pid == -1 for pid, _, _ in gallery) == TINY.n_junk
    assert len(train) == TINY.n_train * TINY.images_per_identity
    for pid, cam, _ in query:  # every query has a true match in another camera
        assert any(g_pid == pid and g_cam != cam for g_pid, g_cam, _ in gallery)
    assert all(1 <= cam <= TINY.n_cameras for _, cam, _ in train + gallery + query)
    names = [p.name for _, _, p in train + gallery + query]
    assert len(names) == len(set(names))
    from reid.data.datasets import parse_market_name  # the loader that reads this world back
    assert all(parse_market_name(n)[0] in train_pids | test_pids | {0, -1} for n in names)


def test_market_ground_truth_beside_every_crop(market):
    for folder in FOLDERS:
        for pid, _, path in _records(market, folder):
            rgb = read_image(path)
            assert rgb.shape == (*TINY.size, 3)
            iuv = cv2.imread(str(market / "gt_iuv" / folder / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
            assert iuv.shape == rgb.shape and iuv.dtype == np.uint8
            assert iuv[..., 0].max() <= len(PART_NAMES)
            if pid > 0:
                assert (market / "textures" / f"{pid:04d}.png").is_file()
    world = json.loads((market / "world.json").read_text())
    assert world["seed"] == TINY.seed and world["config"]["n_train"] == TINY.n_train
    assert len(world["identities"]) == TINY.n_train + TINY.n_test


def test_gt_iuv_is_channel_order_i_u_v_as_cv2_reads_it(market):
    _, _, path = _records(market, "query")[0]
    iuv = decode_raw((market / "gt_iuv" / "query" / f"{path.stem}.png").read_bytes())
    labels = iuv[..., 0]
    assert set(np.unique(labels)) - {0} and labels.max() <= 24
    fg = labels > 0
    assert (iuv[~fg] == 0).all() and iuv[..., 1][fg].std() > 10  # U varies over the body, background is zero


def test_export_is_deterministic_and_seed_changes_images(market, tmp_path):
    again = tmp_path / "again"
    export_market(again, TINY, progress=False, workers=1)  # the fixture rendered in 2 processes
    assert _all_bytes(again) == _all_bytes(market)
    other = tmp_path / "other"
    export_market(other, WorldConfig(**{**TINY.__dict__, "seed": 4}), progress=False)
    a, b = _all_bytes(market), _all_bytes(other)
    jpgs = [k for k in a if k.endswith(".jpg") and k in b]
    assert sum(a[k] != b[k] for k in jpgs) == len(jpgs)


def test_export_replaces_the_folder_and_clears_a_stale_tmp(tmp_path):
    out = tmp_path / "pit"
    (tmp_path / "pit.tmp").mkdir()
    (tmp_path / "pit.tmp" / "half_written").write_text("x")
    out.mkdir()
    (out / "old_file").write_text("x")
    export_pit(out, PitConfig(n_textures=1, poses_per_texture=1), progress=False)
    assert not (tmp_path / "pit.tmp").exists() and not (out / "old_file").exists()
    assert (out / "images").is_dir()


def test_pit_pairs_by_stem_and_disjoint_from_the_market_world(pit, market):
    stems = {f: sorted(p.stem for p in (pit / f).glob("*.png")) for f in ("images", "textures", "gt_iuv")}
    assert stems["images"] == stems["textures"] == stems["gt_iuv"]
    assert len(stems["images"]) == TINY_PIT.n_textures * TINY_PIT.poses_per_texture
    stem = stems["images"][0]
    image, atlas = read_image(pit / "images" / f"{stem}.png"), read_image(pit / "textures" / f"{stem}.png")
    assert image.shape == (*TINY_PIT.size, 3) and atlas.shape == (6 * TINY_PIT.tile, 4 * TINY_PIT.tile, 3)
    iuv = decode_raw((pit / "gt_iuv" / f"{stem}.png").read_bytes())
    assert iuv.shape == image.shape and (iuv[..., 0] > 0).mean() > 0.05
    market_atlases = [read_image(p) for p in sorted((market / "textures").glob("*.png"))]
    pit_atlases = [read_image(pit / "textures" / f"{s}.png") for s in stems["textures"]]
    assert not any(np.array_equal(a, b) for a in pit_atlases for b in market_atlases)
    # even with the same seed as the market world, PIT draws from its own stream
    same_seed = PitConfig(seed=TINY.seed, n_textures=TINY_PIT.n_textures, poses_per_texture=1)
    export_pit(pit.parent / "pit_same_seed", same_seed, progress=False)
    for p in sorted((pit.parent / "pit_same_seed" / "textures").glob("*.png")):
        assert not any(np.array_equal(read_image(p), b) for b in market_atlases)


def test_hard_negative_families_exist():
    people = make_people(WorldConfig(n_train=40, n_test=40))
    by_family: dict[int, list] = {}
    for person in people:
        by_family.setdefault(person.family, []).append(person)
    pairs = [(a, b) for fam in by_family.values() for a, b in zip(fam, fam[1:], strict=False)]
    assert len(pairs) >= 8
    assert all(a.split == b.split for a, b in pairs)
    for a, b in pairs:  # siblings differ in exactly one outfit detail
        diff = [k for k in a.outfit.__dict__ if a.outfit.__dict__[k] != b.outfit.__dict__[k]]
        assert len(diff) == 1, diff


def _hsv_hist(image: np.ndarray) -> np.ndarray:
    hist = cv2.calcHist([cv2.cvtColor(image, cv2.COLOR_RGB2HSV)], [0, 1, 2], None, [16, 4, 4],
                        [0, 180, 0, 256, 0, 256]).ravel()
    return hist / hist.sum()


def test_test_identities_can_have_their_own_image_count(tmp_path):
    cfg = WorldConfig(seed=1, n_train=2, n_test=3, n_cameras=4, cameras_per_identity=(3, 4), images_per_identity=8,
                      test_images_per_identity=10, n_distractors=1, n_junk=1, height=64, width=32, tile=8)
    export_market(tmp_path / "m", cfg, progress=False)
    train, gallery, query = (_records(tmp_path / "m", f) for f in FOLDERS)
    assert len(train) == 2 * 8
    test = [r for r in gallery + query if r[0] > 0]
    assert len(test) == 3 * 10 and len(query) == len({(pid, cam) for pid, cam, _ in test})  # one query per camera
    with pytest.raises(ValueError, match="test_images_per_identity"):
        WorldConfig(cameras_per_identity=(2, 3), test_images_per_identity=5).validate()


def test_colour_histogram_retrieval_is_far_from_perfect(tmp_path):
    cfg = WorldConfig(seed=0, n_train=1, n_test=20, n_cameras=3, cameras_per_identity=(2, 2), images_per_identity=4,
                      n_distractors=10, n_junk=0)
    export_market(tmp_path / "m", cfg, progress=False)
    query, gallery = _records(tmp_path / "m", "query"), _records(tmp_path / "m", "bounding_box_test")
    g_feat = np.stack([_hsv_hist(read_image(p)) for _, _, p in gallery])
    g_pid, g_cam = np.array([r[0] for r in gallery]), np.array([r[1] for r in gallery])
    aps, top1 = [], []
    for pid, cam, path in query:
        keep = ~((g_pid == pid) & (g_cam == cam))
        order = np.argsort(np.abs(g_feat[keep] - _hsv_hist(read_image(path))).sum(1), kind="stable")
        match = g_pid[keep][order] == pid
        hits = np.flatnonzero(match)
        aps.append(((np.arange(len(hits)) + 1) / (hits + 1)).mean())
        top1.append(match[0])
    print(f"colour-histogram baseline: mAP {np.mean(aps):.3f}, rank-1 {np.mean(top1):.3f}, {len(query)} queries")
    assert np.mean(aps) < 0.6


def test_same_identity_front_and_back_are_not_near_identical():
    rng = np.random.default_rng(0)
    people = make_people(WorldConfig(n_train=10, n_test=1))
    diffs = []
    for person in people[:10]:
        atlas = make_atlas(person.outfit, 32, rng)
        front, iuv_f = render_person(atlas, view=View(azimuth=0), seed=1)
        back, iuv_b = render_person(atlas, view=View(azimuth=180), seed=1)
        fg = (iuv_f[..., 0] > 0) | (iuv_b[..., 0] > 0)
        diffs.append(np.abs(front.astype(int) - back.astype(int))[fg].mean())
    # camera noise is 2-7 grey levels; front vs back of one person differ far more on average
    noise_level = 7 * np.sqrt(2) * np.sqrt(2 / np.pi)  # mean |n1 - n2| for the noisiest camera
    assert np.mean(diffs) > 1.5 * noise_level


@pytest.mark.parametrize("bad,name", [({"n_cameras": 1}, "n_cameras"), ({"images_per_identity": 3}, "images_per_identity"),
                                      ({"height": 16}, "height must be >= 32"), ({"n_identities": 5}, "n_identities")])
def test_bad_world_params_name_the_parameter(bad, name):
    with pytest.raises(ConfigError, match=name):
        from_mapping(WorldConfig, bad, "synthesize.world")


def test_pit_params_validate():
    with pytest.raises(ConfigError, match="n_textures"):
        from_mapping(PitConfig, {"n_textures": 0}, "synthesize.pit")
    with pytest.raises(ConfigError, match="synthesize.pit: height must be >= 32 and width >= 16, got 64x8"):
        from_mapping(PitConfig, {"height": 64, "width": 8}, "synthesize.pit")
    cfg = from_mapping(PitConfig, {"height": 64, "width": 32}, "synthesize.pit")
    assert cfg.size == (64, 32)


def test_cli_size_is_the_image_height_and_width(tmp_path, capsys):
    synth_cli(["pit", "--out", str(tmp_path / "pit"), "--textures", "1", "--poses", "1", "--size", "64", "32", "--quiet"])
    assert read_image(tmp_path / "pit" / "images" / "pit00000_00.png").shape == (64, 32, 3)
    synth_cli(["market", "--out", str(tmp_path / "market"), "--identities", "1", "--size", "48", "24", "--quiet"])
    assert {read_image(p).shape for p in (tmp_path / "market" / "query").glob("*.jpg")} == {(48, 24, 3)}
    with pytest.raises(SystemExit):
        synth_cli(["pit", "--out", str(tmp_path / "bad"), "--size", "16", "8", "--quiet"])
    assert "height must be >= 32 and width >= 16, got 16x8" in capsys.readouterr().err


def test_densepose_views_add_training_renders_without_touching_the_reid_splits(market, tmp_path):
    out = tmp_path / "market"
    export_market(out, WorldConfig(**{**TINY.__dict__, "densepose_views": 3}), progress=False, workers=1)
    extra = _records(out, "densepose_train")
    assert len(extra) == 3 * TINY.n_train
    train_pids = {pid for pid, _, _ in _records(market, "bounding_box_train")}
    assert {pid for pid, _, _ in extra} == train_pids  # training identities only
    for _, _, path in extra:
        iuv = decode_raw((out / "gt_iuv" / "densepose_train" / f"{path.stem}.png").read_bytes())
        assert iuv.shape[:2] == read_image(path).shape[:2] and iuv[..., 0].max() > 0
    before, after = _all_bytes(market), _all_bytes(out)
    for name, data in before.items():  # the reID world is byte-identical
        if name != "world.json":
            assert after[name] == data, name
    assert json.loads((out / "world.json").read_text())["counts"]["densepose_train"] == 3 * TINY.n_train
