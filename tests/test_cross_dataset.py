"""Cross-dataset evaluation: the shifted target world, prepare_target, cross_evaluate and the report's section."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from layouts import CUSTOM_ROWS, make_custom
from test_features_stage import save_model
from test_inference import SIZE
from test_report import SCORES, query_table, result, table_row, write_query_file

from reid.config import ConfigError
from reid.data.datasets import load_market1501, parse_market_name
from reid.data.manifest import build_manifest, read_manifest, write_manifest
from reid.engine.inference import manifest_features
from reid.export import load_trained
from reid.features import read_features
from reid.io import file_sha256, parquet_metadata
from reid.report import CrossResult, cross_dataset_markdown, load_cross_result
from reid.synth import CameraDomain, TargetConfig, WorldConfig, export_market, export_target
from reid.synth.camera import sample_cameras
from reid.synth.world import S_CAMERAS, _rng
from stages import cross_evaluate, prepare_target

ROOT = Path(__file__).resolve().parents[1]
TINY_TARGET = TargetConfig(seed=0, n_identities=4, n_train=1, n_cameras=3, cameras_per_identity=(2, 2),
                           images_per_identity=4, n_distractors=2, n_junk=1, height=64, width=32, tile=8)
TINY_WORLD = WorldConfig(seed=0, n_train=2, n_test=4, n_cameras=3, cameras_per_identity=(2, 2),
                         images_per_identity=4, n_distractors=2, n_junk=1, height=64, width=32, tile=8)
TARGET_PARAMS = {"dataset": "synthetic", "root": "data/synth/target", "on_bad_image": "fail", "num_workers": 1}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def target_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cross") / "target"
    export_target(out, TINY_TARGET, progress=False, workers=1)
    return out


# ----------------------------------------------------------------------------- the target world

def test_the_default_domain_draws_the_reid_worlds_cameras_unchanged():
    # Pinned from data/synth/market/world.json as rendered before CameraDomain existed (seed 0, 6 cameras).
    first, last = sample_cameras(6, _rng(0, S_CAMERAS))[::5]
    assert (first.elevation, first.noise, first.resolution, first.blur) == (
        14.222581367429509, 2.383969759917582, 0.7287414572183167, 0.5)
    assert first.cast == (0.9131905537505515, 1.026896020644719, 0.9036280360389689)
    assert (last.elevation, last.resolution, last.blur) == (23.567547460894257, 0.9769093678564575, 0.9)


def test_target_world_is_market_layout_disjoint_and_shifted(target_world, tmp_path):
    assert sorted(p.name for p in target_world.iterdir()) == [
        "bounding_box_test", "bounding_box_train", "gt_iuv", "query", "textures", "world.json"]
    records = load_market1501(target_world)
    test_pids = {r.pid for r in records if r.split != "train"} - {0, -1}
    assert len(test_pids) == TINY_TARGET.n_identities
    assert len({r.pid for r in records if r.split == "train"}) == TINY_TARGET.n_train
    info = json.loads((target_world / "world.json").read_text())
    assert info["kind"] == "reid.synth target world" and info["config"]["domain"]["brightness"] == 0.8
    lo, hi = TINY_TARGET.domain.elevation
    assert all(lo <= cam["elevation"] <= hi for cam in info["cameras"])
    # Same seed as a world: the target still shares no identity (atlas) or camera with it.
    world = tmp_path / "world"
    export_market(world, TINY_WORLD, progress=False, workers=1)
    atlases = lambda root: {p.read_bytes() for p in (root / "textures").iterdir()}  # noqa: E731
    assert not atlases(world) & atlases(target_world)
    world_cams = json.loads((world / "world.json").read_text())["cameras"]
    assert not {c["azimuth"] for c in world_cams} & {c["azimuth"] for c in info["cameras"]}


def test_target_world_is_deterministic_and_its_domain_validates(target_world, tmp_path):
    again = tmp_path / "again"
    export_target(again, TINY_TARGET, progress=False, workers=1)
    for path in sorted((target_world / "query").iterdir()):
        assert (again / "query" / path.name).read_bytes() == path.read_bytes()
    bad = dataclasses.replace(TINY_TARGET, domain=CameraDomain(resolution=(0.9, 0.5)))
    with pytest.raises(ValueError, match="resolution must be a \\[min, max\\] range"):
        bad.validate()


# ----------------------------------------------------------------------------- prepare_target

@pytest.fixture
def workdir(tmp_path, monkeypatch, target_world) -> Path:
    """A repository-like folder with the tiny target world at data/synth/target."""
    os.makedirs(tmp_path / "data" / "synth")
    os.symlink(target_world, tmp_path / "data" / "synth" / "target")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(params: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(params))


def run_prepare_target() -> None:
    prepare_target.main(["--manifest", "data/target/manifest.parquet", "--rejects", "data/target/rejects.txt",
                         "--digest", "data/target/images.sha256"])


def test_prepare_target_writes_query_and_gallery_parsed_from_market_names(workdir, target_world):
    write_params({"target": TARGET_PARAMS})
    run_prepare_target()
    table, root = read_manifest("data/target/manifest.parquet")
    assert root == Path("data/synth/target")
    assert set(table.column("split").to_pylist()) == {"query", "gallery"}  # the token train split is left out
    rows = table.to_pylist()
    assert len(rows) == len(list((target_world / "query").iterdir())) + len(
        list((target_world / "bounding_box_test").iterdir()))
    for row in rows:
        assert (row["pid"], row["camid"]) == parse_market_name(Path(row["path"]).name) and row["label"] == -1
        assert row["path"].startswith("query/" if row["split"] == "query" else "bounding_box_test/")
    assert {-1, 0} <= {r["pid"] for r in rows if r["split"] == "gallery"}
    meta = parquet_metadata("data/target/manifest.parquet")
    assert (meta["dataset"], meta["train_images"]) == ("synthetic", "0")
    assert Path("data/target/rejects.txt").read_text() == ""


@pytest.mark.parametrize("with_train", [False, True])
def test_a_custom_target_needs_no_train_rows_and_drops_any_unread(workdir, with_train):
    """A target is never trained on: query + gallery rows suffice; train rows, if any, are dropped before
    their images are read (a missing train image is no error)."""
    rows = [r for r in CUSTOM_ROWS if r[3] != "train"]
    if with_train:
        rows += [("images/missing/never_read.jpg", 9, 0, "train")]
    manifest = make_custom(Path("data/custom_target"), rows)
    write_params({"target": {**TARGET_PARAMS, "dataset": "custom", "root": str(manifest)}})
    run_prepare_target()
    table, _ = read_manifest("data/target/manifest.parquet")
    assert sorted(table.column("path").to_pylist()) == sorted(r[0] for r in rows if r[3] != "train")
    assert parquet_metadata("data/target/manifest.parquet")["train_images"] == "0"


def test_a_custom_target_still_needs_query_and_gallery_rows(workdir):
    manifest = make_custom(Path("data/custom_target"), [r for r in CUSTOM_ROWS if r[3] != "gallery"])
    write_params({"target": {**TARGET_PARAMS, "dataset": "custom", "root": str(manifest)}})
    with pytest.raises(ValueError, match="no gallery rows"):
        run_prepare_target()


@pytest.mark.parametrize("change, message", [
    ({"dataset": "market"}, "target.dataset: 'market' is not one of"),
    ({"same_camera": "keep"}, "target: same_camera: keep is for dataset custom only"),
    ({"on_bad_image": "ignore"}, "target.on_bad_image"),
])
def test_prepare_target_names_a_bad_parameter(workdir, change, message):
    write_params({"target": {**TARGET_PARAMS, **change}})
    with pytest.raises(ConfigError, match=message):
        run_prepare_target()
    assert not Path("data/target/manifest.parquet").exists()


def test_prepare_target_refuses_a_folder_without_market_layout(workdir):
    Path("data/empty").mkdir()
    write_params({"target": {**TARGET_PARAMS, "dataset": "market1501", "root": "data/empty"}})
    with pytest.raises(ValueError, match="folder not found: data/empty/bounding_box_train"):
        run_prepare_target()


def test_stage_cli_exits_2_with_one_line_for_a_data_error(workdir):
    # (a missing target.root is stopped before, by locate@target: tests/test_locate.py)
    Path("data/empty").mkdir()
    write_params({"target": {**TARGET_PARAMS, "dataset": "market1501", "root": "data/empty"}})
    done = subprocess.run([sys.executable, "-m", "stages.prepare_target", "--manifest", "m.parquet", "--rejects",
                           "r.txt", "--digest", "d.txt"], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["error: folder not found: data/empty/bounding_box_train"]


# ----------------------------------------------------------------------------- cross_evaluate

def source_manifest(path: Path, world: Path) -> None:
    """A source manifest as prepare writes it (dataset + root metadata), of a tiny synthetic world."""
    records = load_market1501(world)
    table, _ = build_manifest(records, world, num_workers=1)
    write_manifest(path, table, dataset="synthetic", root=world)


CROSS_PARAMS = {"features": {"flip": True, "batch_size": 8, "num_workers": 0, "device": "cpu"},
                "evaluate": {"max_rank": 5, "n_ranked_queries": 2, "ranked_list_size": 3, "device": "cpu"}}


def run_cross(name: str, weights: str) -> None:
    cross_evaluate.main([name, "--weights", weights, "--source-manifest", "data/manifest.parquet",
                         "--manifest", "data/target/manifest.parquet", "--features", f"data/target/features/{name}.parquet",
                         "--metrics", f"metrics/cross/{name}.json", "--cmc", f"metrics/cross/cmc/{name}.tsv",
                         "--out", f"data/target/eval/{name}"])


@pytest.mark.parametrize("name", ["baseline", "dsa"])
def test_cross_evaluate_embeds_the_inference_feature_on_the_target_and_labels_the_pair(workdir, tmp_path, name):
    write_params({"target": TARGET_PARAMS, **CROSS_PARAMS})
    run_prepare_target()
    export_market(tmp_path / "world", TINY_WORLD, progress=False, workers=1)
    source_manifest(workdir / "data" / "manifest.parquet", tmp_path / "world")
    save_model(workdir / "data" / "models" / name, name)
    run_cross(name, f"data/models/{name}")  # dsa: no DSAP of the target exists, and none is needed

    metrics = json.loads(Path(f"metrics/cross/{name}.json").read_text())
    assert metrics["source"] == {"dataset": "synthetic", "root": (tmp_path / "world").as_posix()}
    assert metrics["target"] == {"dataset": "synthetic", "root": "data/synth/target"}
    assert "diagnostics" not in metrics  # fused / guide are a source-only matter
    table, _ = read_manifest("data/target/manifest.parquet")
    n_query = table.column("split").to_pylist().count("query")
    assert metrics["n_query"] == n_query and 0 < metrics["n_query_valid"] <= n_query
    assert 0.0 <= metrics["mAP_pct"] <= 100.0
    # The feature file is the inference network's embedding of the target's query + gallery, as the
    # features stage computes it on the source.
    file = read_features(f"data/target/features/{name}.parquet")
    assert file.image_ids == table.column("image_id").to_pylist()
    weights = Path(f"data/models/{name}/model.pt")
    assert (file.metadata["model"], file.metadata["model_sha256"]) == (name, file_sha256(weights))
    expected = manifest_features(load_trained(weights.parent).network, "data/target/manifest.parquet", SIZE,
                                 device=torch.device("cpu"), flip=True, batch_size=8)
    np.testing.assert_allclose(file.features, np.array(expected["feature"].to_pylist(), np.float32), atol=1e-5)
    per_query = pq.read_table(f"data/target/eval/{name}/per_query.parquet")
    assert per_query.num_rows == n_query
    assert Path(f"data/target/eval/{name}/ranked_list.png").stat().st_size > 0
    assert Path(f"metrics/cross/cmc/{name}.tsv").read_text().startswith("rank\taccuracy_pct\n1\t")


# ----------------------------------------------------------------------------- the report

SOURCE = {"dataset": "synthetic", "root": "data/synth/market"}
TARGET = {"dataset": "market1501", "root": "/data/Market-1501"}


def cross(name: str, rank1: float, mAP: float, queries=None, target=TARGET) -> CrossResult:
    return CrossResult(name, SOURCE, target, {**SCORES, "rank1_pct": rank1, "mAP_pct": mAP}, queries)


def test_cross_section_heads_the_pair_and_lists_source_target_and_drop():
    hits = np.array([0] * 30 + [3] * 70)  # rank-1 hit on 30 of 100 queries
    text = cross_dataset_markdown(
        [result("baseline", 60.0, 50.0), result("dsa", 62.0, 52.0)],
        [cross("baseline", 30.0, 25.5, query_table(np.full(100, 0.255), first_hit=hits)),
         cross("dsa", 35.0, 28.0)])
    assert "## Cross-dataset: `synthetic` (data/synth/market) → `market1501` (/data/Market-1501)" in text
    row = table_row(text, "`baseline`")
    assert row[:3] == ["`baseline`", "60.0", "50.0"] and row[5:] == ["-30.0", "-24.5", "12"]
    lo, hi = (float(v) for v in row[3].removeprefix("30.0 [").removesuffix("]").split(", "))
    assert 20.0 < lo < 30.0 < hi < 40.0  # a bootstrap interval over 100 queries around 30 %
    assert row[4] == "25.5 [25.5, 25.5]"  # the same AP on every query: no spread
    assert table_row(text, "`dsa`")[3:5] == ["35.0", "28.0"]  # no per-query file read: no interval
    assert cross_dataset_markdown([result("baseline", 60.0, 50.0)], []) == ""


def test_cross_section_refuses_mixed_pairs_and_models_without_source_scores():
    with pytest.raises(ValueError, match="different source -> target pairs"):
        cross_dataset_markdown([result("baseline", 60.0, 50.0), result("dsa", 1.0, 1.0)],
                               [cross("baseline", 1.0, 1.0), cross("dsa", 1.0, 1.0, target=SOURCE)])
    with pytest.raises(ValueError, match="without source scores: dsa"):
        cross_dataset_markdown([result("baseline", 60.0, 50.0)], [cross("dsa", 1.0, 1.0)])


def test_cross_result_file_needs_its_labels(tmp_path):
    (tmp_path / "baseline.json").write_text(json.dumps({**SCORES, "source": SOURCE}))
    with pytest.raises(ValueError, match="baseline.json: lacks target"):
        load_cross_result("baseline", tmp_path)
    (tmp_path / "baseline.json").write_text(json.dumps({**SCORES, "source": SOURCE, "target": TARGET}))
    write_query_file(tmp_path / "eval" / "baseline" / "per_query.parquet", query_table(np.ones(3)))
    loaded = load_cross_result("baseline", tmp_path, tmp_path / "eval")
    assert (loaded.source, loaded.target, loaded.scores["rank1_pct"]) == (SOURCE, TARGET, 60.0)
    assert loaded.queries is not None and loaded.queries.valid.all()

