import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from layouts import make_cuhk01, make_market, truncate, write_dummy

from reid.config import ConfigError, from_mapping
from reid.data.datasets import DatasetError, ImageRecord, load_cuhk01, load_market1501
from reid.data.manifest import (
    SCHEMA,
    PrepareConfig,
    build_manifest,
    images_digest,
    prepare_manifest,
    read_manifest,
    write_manifest,
    write_rejects,
)
from reid.io import ImageReadError, parquet_metadata

REPO = Path(__file__).resolve().parents[1]


def test_manifest_columns_sizes_and_labels(tmp_path):
    root = make_market(tmp_path)
    table, rejects = build_manifest(load_market1501(root), root, num_workers=2)
    assert rejects == [] and table.schema == SCHEMA
    rows = table.to_pylist()
    assert len(rows) == 11
    first = rows[0]
    assert first["image_id"] == "train/0002_c1s1_000451_03" and first["path"] == "bounding_box_train/0002_c1s1_000451_03.jpg"
    assert (first["height"], first["width"]) == (16, 8)
    assert {r["height"] for r in rows} == set(range(16, 28)) - {20}  # per-file sizes, junk train image dropped
    assert len(set(table.column("image_id").to_pylist())) == len(rows)
    train = [r for r in rows if r["split"] == "train"]
    assert [(r["pid"], r["label"]) for r in train] == [(2, 0), (2, 0), (7, 1), (7, 1)]
    assert all(r["label"] == -1 for r in rows if r["split"] != "train")
    gallery = {r["pid"] for r in rows if r["split"] == "gallery"}
    assert {-1, 0} <= gallery


def test_labels_contiguous_by_sorted_pid(tmp_path):
    root = make_cuhk01(tmp_path, n_ids=9)
    table, _ = build_manifest(load_cuhk01(root, seed=3), root, num_workers=1)
    train = [(r["pid"], r["label"]) for r in table.to_pylist() if r["split"] == "train"]
    pids = sorted({p for p, _ in train})
    assert {p: lab for p, lab in train} == {p: i for i, p in enumerate(pids)}


def test_bad_images_fail_listing_all_or_skip(tmp_path):
    root = make_market(tmp_path)
    records = load_market1501(root)
    cut = truncate(root / "query" / "0003_c2s1_000551_00.jpg")
    (root / "bounding_box_test" / "0001_c5s1_000201_01.jpg").unlink()
    (root / "bounding_box_train" / "0007_c6s3_077469_02.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="3 unreadable") as err:
        build_manifest(records, root, num_workers=2)
    for name in ("0003_c2s1_000551_00.jpg", "0001_c5s1_000201_01.jpg", "0007_c6s3_077469_02.jpg"):
        assert name in str(err.value)
    table, rejects = build_manifest(records, root, on_bad_image="skip", num_workers=2)
    assert len(table) == 8 and len(rejects) == 3
    assert str(cut) in {r.path for r in rejects}
    assert cut.name not in "".join(table.column("path").to_pylist())
    write_rejects(tmp_path / "rejects.txt", rejects)
    lines = (tmp_path / "rejects.txt").read_text().splitlines()
    assert len(lines) == 3 and all("\t" in ln for ln in lines) and lines == sorted(lines)


def test_fail_mode_lists_wrongly_named_and_unreadable_files_together(tmp_path):
    root = make_market(tmp_path / "market")
    write_dummy(root / "query" / "holiday.jpg")  # wrongly named
    truncate(root / "query" / "0003_c2s1_000551_00.jpg")  # unreadable, in the same folder
    (root / "bounding_box_train" / "0007_c6s3_077469_02.jpg").write_bytes(b"")
    cfg = from_mapping(PrepareConfig, {"dataset": "market1501", "root": str(root), "num_workers": 2}, "prepare")
    with pytest.raises(DatasetError, match="3 bad file.*1 wrongly named, 2 unreadable") as err:
        prepare_manifest(cfg)
    for name in ("holiday.jpg", "0003_c2s1_000551_00.jpg", "0007_c6s3_077469_02.jpg"):
        assert name in str(err.value)
    assert "prepare.on_bad_image: skip" in str(err.value)
    skip = from_mapping(PrepareConfig, {"dataset": "market1501", "root": str(root), "on_bad_image": "skip",
                                        "num_workers": 2}, "prepare")
    table, rejects = prepare_manifest(skip)
    assert sorted(Path(r.path).name for r in rejects) == ["0003_c2s1_000551_00.jpg", "0007_c6s3_077469_02.jpg",
                                                          "holiday.jpg"]
    assert len(table) == 9 and "holiday" not in "".join(table.column("path").to_pylist())


def test_fail_mode_with_only_wrongly_named_files_lists_them(tmp_path):
    root = tmp_path / "market"
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        write_dummy(root / folder / f"{folder}.jpg")
    cfg = from_mapping(PrepareConfig, {"dataset": "market1501", "root": str(root)}, "prepare")
    with pytest.raises(DatasetError, match="3 bad file.*3 wrongly named, 0 unreadable"):
        prepare_manifest(cfg)


def test_skipping_keeps_labels_contiguous(tmp_path):
    root = make_market(tmp_path)
    for name in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg"):  # every image of pid 2
        truncate(root / "bounding_box_train" / name)
    table, rejects = build_manifest(load_market1501(root), root, on_bad_image="skip", num_workers=1)
    assert len(rejects) == 2
    assert {(r["pid"], r["label"]) for r in table.to_pylist() if r["split"] == "train"} == {(7, 0)}


def test_manifest_rejects_bad_records(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        build_manifest([], tmp_path)
    write_dummy(tmp_path / "a" / "x.jpg")
    write_dummy(tmp_path / "b" / "x.jpg")
    clash = [ImageRecord("a/x.jpg", 1, 0, "gallery"), ImageRecord("b/x.jpg", 2, 0, "gallery")]
    with pytest.raises(DatasetError, match="clash"):
        build_manifest(clash, tmp_path)
    with pytest.raises(DatasetError, match="negative"):
        build_manifest([ImageRecord("a/x.jpg", -1, 0, "train")], tmp_path)
    with pytest.raises(ValueError, match="on_bad_image"):
        build_manifest(clash[:1], tmp_path, on_bad_image="ignore")


def test_manifest_deterministic_and_metadata(tmp_path):
    root = make_market(tmp_path / "data")
    for i, workers in enumerate((1, 3)):
        table, _ = build_manifest(load_market1501(root), root, num_workers=workers)
        write_manifest(tmp_path / f"m{i}.parquet", table, dataset="market1501", root=root)
    assert (tmp_path / "m0.parquet").read_bytes() == (tmp_path / "m1.parquet").read_bytes()
    meta = parquet_metadata(tmp_path / "m0.parquet")
    assert meta["dataset"] == "market1501" and meta["root"] == root.as_posix()
    assert (meta["train_ids"], meta["query_images"], meta["gallery_ids"]) == ("2", "2", "3")
    table, read_root = read_manifest(tmp_path / "m0.parquet")
    assert read_root == root and (read_root / table.column("path")[0].as_py()).is_file()
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(tmp_path / "none.parquet")


def test_prepare_config():
    assert from_mapping(PrepareConfig, {}, "prepare").dataset_root == "data/synth/market"
    with pytest.raises(ConfigError, match="prepare.root: expected a string, got None"):
        from_mapping(PrepareConfig, {"root": None}, "prepare")  # a null breaks dvc.yaml's ${prepare.root}
    with pytest.raises(ConfigError, match="prepare: root must be the dataset folder"):
        from_mapping(PrepareConfig, {"root": " "}, "prepare")
    with pytest.raises(ConfigError, match="prepare.dataset"):
        from_mapping(PrepareConfig, {"dataset": "viper"}, "prepare")
    with pytest.raises(ConfigError, match="prepare.on_bad_image"):
        from_mapping(PrepareConfig, {"on_bad_image": "ignore"}, "prepare")


def _run_prepare(cwd: Path, params: dict) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(yaml.safe_dump({"prepare": params}))
    env = {**os.environ, "REID_PARAMS": str(cwd / "params.yaml"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--manifest", "data/manifest.parquet",
                           "--rejects", "data/rejects.txt", "--digest", "data/images.sha256"], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_prepare_stage_with_a_null_root_is_one_line_naming_prepare_root(tmp_path):
    done = _run_prepare(tmp_path, {"dataset": "synthetic", "root": None})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'params.yaml'}: prepare.root: expected a string, "
                                                "got None"]
    assert not (tmp_path / "data").exists()


def test_prepare_stage_end_to_end(tmp_path):
    root = make_market(tmp_path / "data" / "synth" / "market")
    write_dummy(root / "query" / "holiday.jpg")
    truncate(root / "bounding_box_test" / "0003_c1s1_000451_01.jpg")
    run = _run_prepare(tmp_path, {"dataset": "synthetic", "num_workers": 2})
    assert run.returncode != 0 and "holiday.jpg" in run.stderr and "0003_c1s1_000451_01.jpg" in run.stderr
    assert not (tmp_path / "data" / "manifest.parquet").exists()
    run = _run_prepare(tmp_path, {"dataset": "synthetic", "on_bad_image": "skip", "num_workers": 2})
    assert run.returncode == 0, run.stderr
    table = pq.read_table(tmp_path / "data" / "manifest.parquet")
    assert len(table) == 10
    assert parquet_metadata(tmp_path / "data" / "manifest.parquet")["root"] == "data/synth/market"
    rejects = (tmp_path / "data" / "rejects.txt").read_text()
    assert "holiday.jpg" in rejects and "0003_c1s1_000451_01.jpg" in rejects
    (root / "query" / "holiday.jpg").unlink()
    write_dummy(root / "bounding_box_test" / "0003_c1s1_000451_01.jpg")
    run = _run_prepare(tmp_path, {"dataset": "market1501", "root": "data/synth/market", "num_workers": 1})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "data" / "rejects.txt").read_text() == ""  # always written
    assert len(pq.read_table(tmp_path / "data" / "manifest.parquet")) == 11
    digest = (tmp_path / "data" / "images.sha256").read_text()
    assert digest == images_digest(pq.read_table(tmp_path / "data" / "manifest.parquet"), root) + "\n"


def test_images_digest_changes_with_any_named_image_and_nothing_else(tmp_path):
    root = tmp_path / "market"
    table = pa.table({"path": ["query/a.jpg", "bounding_box_test/b.jpg"]})
    for rel in table.column("path").to_pylist():
        write_dummy(root / rel)
    before = images_digest(table, root)
    assert images_digest(table, root) == before  # deterministic
    write_dummy(root / "query" / "unlisted.jpg")  # a file the manifest does not name
    assert images_digest(table, root) == before
    (root / "query" / "a.jpg").write_bytes((root / "query" / "a.jpg").read_bytes() + b"\0")  # one byte more
    assert images_digest(table, root) != before
    assert images_digest(table.slice(0, 1), root) != images_digest(table, root)  # the list of images counts
