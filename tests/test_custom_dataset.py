"""The custom dataset: your own CSV / Parquet manifest (path, pid, camid, split, optional label)."""

import os
import typing

import numpy as np
import pytest
from layouts import CUSTOM_HEADER, CUSTOM_ROWS, make_custom, truncate, write_csv, write_dummy

from reid.config import ConfigError, from_mapping
from reid.data.datasets import DATASETS, DatasetError, ImageRecord, load_dataset, read_custom, unmatched_queries
from reid.data.manifest import SCHEMA, PrepareConfig, prepare_manifest, read_manifest, write_manifest
from reid.io import parquet_metadata
from reid.metrics import count_positives, evaluate


def custom_config(root, **params) -> PrepareConfig:
    return from_mapping(PrepareConfig, {"dataset": "custom", "root": str(root), "num_workers": 1, **params}, "prepare")


def rows_with(*changes: tuple[int, tuple]) -> list[tuple]:
    """CUSTOM_ROWS with row i replaced, for (i, row) in `changes`."""
    rows = list(CUSTOM_ROWS)
    for i, row in changes:
        rows[i] = row
    return rows


def problems(err: pytest.ExceptionInfo) -> list[str]:
    return [line.strip() for line in str(err.value).splitlines()[1:]]


@pytest.mark.parametrize("name", ["manifest.csv", "manifest.parquet"])
def test_csv_and_parquet_give_the_same_records(tmp_path, name):
    manifest = make_custom(tmp_path, name=name)
    records = load_dataset("custom", manifest)
    assert records[0] == ImageRecord("images/0001/a.jpg", 1, 0, "train")
    assert [r.split for r in records] == ["train"] * 4 + ["query"] * 2 + ["gallery"] * 4
    assert sorted(records) == sorted(ImageRecord(*row) for row in CUSTOM_ROWS)
    gallery = {r.pid for r in records if r.split == "gallery"}
    assert {-1, 0} <= gallery  # junk and a distractor, as in Market-1501


def test_parquet_accepts_pandas_float_ids_and_names_the_row(tmp_path):
    rows = [(p, float(pid), camid, s) for p, pid, camid, s in CUSTOM_ROWS]  # pandas writes NaN-able ints as floats
    manifest = make_custom(tmp_path, rows, name="manifest.parquet")
    assert [r.pid for r in load_dataset("custom", manifest)][:2] == [1, 1]
    rows[2] = ("images/0002/a.jpg", 2.5, 0, "train")
    make_custom(tmp_path, rows, name="manifest.parquet", images=False)
    with pytest.raises(DatasetError, match="row 2, column pid: expected an integer, got 2.5"):
        load_dataset("custom", manifest)


@pytest.mark.parametrize("name", ["manifest.csv", "manifest.parquet"])
def test_ids_past_the_int32_columns_are_row_errors_before_any_image_is_read(tmp_path, name):
    rows = rows_with((0, ("images/0001/a.jpg", 2**31 + 5, 0, "train")), (4, ("images/0005/a.jpg", 5, 2**40, "query")),
                     (6, ("images/0005/b.jpg", 2**63 - 1, 1, "gallery")))
    manifest = make_custom(tmp_path, rows, name=name, images=False)  # no image exists: none may be read
    with pytest.raises(DatasetError, match="3 problem") as err:
        prepare_manifest(custom_config(manifest))
    where = "line" if name.endswith(".csv") else "row"
    first = 2 if where == "line" else 0
    assert problems(err) == [
        f"{where} {first}, column pid: 2147483653: identities must be <= 2147483647 (the manifest stores them as "
        "32-bit integers)",
        f"{where} {first + 4}, column camid: 1099511627776: camera ids must be <= 2147483647 (the manifest stores "
        "them as 32-bit integers)",
        f"{where} {first + 6}, column pid: 9223372036854775807: identities must be <= 2147483647 (the manifest "
        "stores them as 32-bit integers)",
    ]


def test_missing_columns_all_named_and_extra_columns_ignored_with_a_note(tmp_path):
    write_csv(tmp_path / "m.csv", ["path", "split", "bbox"], [["a.jpg", "train", "0,0,8,16"]])
    with pytest.raises(DatasetError, match=r"missing column\(s\) pid, camid; the header is path, split, bbox"):
        read_custom(tmp_path / "m.csv")
    make_custom(tmp_path, extra={"bbox": ["0 0 8 16"] * len(CUSTOM_ROWS), "source": ["cam.mp4"] * len(CUSTOM_ROWS)})
    data = read_custom(tmp_path / "manifest.csv")
    assert len(data.rows) == len(CUSTOM_ROWS)
    assert any(n.startswith("ignored column(s) bbox, source") for n in data.notes)


def test_bad_cells_all_listed_by_line_and_column(tmp_path):
    rows = [list(r) for r in CUSTOM_ROWS]
    rows[0][3] = "test"  # line 2
    rows[1][1] = "abc"  # line 3
    rows[2][2] = "c1"  # line 4
    rows[3][1] = -1  # line 5: junk in train
    rows[4][1] = -1  # line 6: junk query
    rows[5][2] = -2  # line 7
    rows[6][1] = -3  # line 8
    rows[7][0] = ""  # line 9
    write_csv(tmp_path / "manifest.csv", CUSTOM_HEADER, rows)
    with pytest.raises(DatasetError, match="8 problem") as err:
        read_custom(tmp_path / "manifest.csv")
    assert problems(err) == [
        "line 2, column split: 'test' is not one of train, query, gallery",
        "line 3, column pid: expected an integer, got 'abc'",
        "line 4, column camid: expected an integer, got 'c1'",
        "line 5, column pid: -1 (junk) is for gallery rows only: a train row needs an identity",
        "line 6, column pid: -1 (junk) is for gallery rows only: a query row needs an identity",
        "line 7, column camid: -2: camera ids are >= 0",
        "line 8, column pid: -3: identities are >= 0, or -1 for junk (gallery rows only)",
        "line 9, column path: expected a file path, got None",
    ]
    assert str(tmp_path / "manifest.csv") in str(err.value).splitlines()[0]


def test_line_numbers_count_blank_lines_bom_and_ragged_rows(tmp_path):
    text = "\ufeffpath,pid,camid,split\n" + "\n".join(",".join(map(str, r)) for r in CUSTOM_ROWS[:4])
    text += "\n\nimages/0005/a.jpg,5,0\n" + "\n".join(",".join(map(str, r)) for r in CUSTOM_ROWS[5:]) + "\n"
    (tmp_path / "manifest.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_custom(tmp_path / "manifest.csv")
    assert problems(err) == ["line 7: 3 field(s), the header has 4"]  # line 6 is blank


def test_duplicate_paths_and_empty_splits(tmp_path):
    rows = rows_with((6, ("./images/0005/a.jpg", 5, 1, "gallery")))  # the query again, as gallery: a leak
    write_csv(tmp_path / "manifest.csv", CUSTOM_HEADER, rows)
    with pytest.raises(DatasetError) as err:
        read_custom(tmp_path / "manifest.csv")
    assert problems(err) == ["line 8, column path: images/0005/a.jpg is listed already on line 6"]
    rows[1] = ("images/0001/b.png", "x", 1, "train")
    write_csv(tmp_path / "manifest.csv", CUSTOM_HEADER, rows)
    with pytest.raises(DatasetError, match="2 problem") as err:  # bad cells and duplicates in one list
        read_custom(tmp_path / "manifest.csv")
    assert problems(err) == ["line 3, column pid: expected an integer, got 'x'",
                             "line 8, column path: images/0005/a.jpg is listed already on line 6"]
    write_csv(tmp_path / "manifest.csv", CUSTOM_HEADER, [r for r in CUSTOM_ROWS if r[3] != "query"])
    with pytest.raises(DatasetError) as err:
        read_custom(tmp_path / "manifest.csv")
    assert problems(err) == ["column split: no query rows (train is learned from, query and gallery are evaluated)"]
    write_csv(tmp_path / "manifest.csv", CUSTOM_HEADER, [])
    with pytest.raises(DatasetError, match="no rows below the header"):
        read_custom(tmp_path / "manifest.csv")


def test_one_image_under_two_paths_is_listed_twice(tmp_path):
    make_custom(tmp_path)
    os.symlink("a.jpg", tmp_path / "images/0005/copy.jpg")  # the query's image again, through a link
    rows = rows_with((6, ("images/0005/copy.jpg", 5, 1, "gallery")))
    write_csv(tmp_path / "manifest.csv", CUSTOM_HEADER, rows)
    with pytest.raises(DatasetError) as err:
        read_custom(tmp_path / "manifest.csv")
    assert problems(err) == ["line 8, column path: images/0005/copy.jpg is the file images/0005/a.jpg of line 6 "
                             "(a link): one image listed twice"]


def test_an_absolute_path_inside_the_manifest_folder_is_not_outside(tmp_path):
    make_custom(tmp_path / "mydata")
    rows = rows_with((9, (str(tmp_path / "mydata/images/junk/a.jpg"), -1, 0, "gallery")),
                     (8, ("images/../images/0000/a.jpg", 0, 1, "gallery")))
    make_custom(tmp_path / "mydata", rows, images=False)
    table, _ = prepare_manifest(custom_config(tmp_path / "mydata"))
    assert "lie outside" not in table.schema.metadata[b"notes"].decode()


def test_given_labels_are_checked_then_kept(tmp_path):
    labels = [1, 1, 0, 0, -1, "", -1, "", "", ""]  # pid 1 -> 1, pid 2 -> 0: a valid mapping, not by sorted pid
    make_custom(tmp_path, extra={"label": labels})
    table, _ = prepare_manifest(custom_config(tmp_path / "manifest.csv"))
    train = {(r["pid"], r["label"]) for r in table.to_pylist() if r["split"] == "train"}
    assert train == {(1, 1), (2, 0)}
    assert all(r["label"] == -1 for r in table.to_pylist() if r["split"] != "train")

    empty = ["", "", "", "", "", ""]  # query and gallery rows
    for values, message in (
            ([0, 1, 1, 1], "line 3, column label: pid 1 has label 1 here, 0 on line 2"),
            ([0, 0, 0, 1], "line 4, column label: label 0 is pid 2 here, pid 1 on line 2"),
            ([0, 0, 2, 2], "line 4, column label: 2 is out of range: labels are 0..1, one per train identity (2)"),
            ([0, 0, "", 1], "line 4, column label: expected an integer >= 0 on a train row, got None")):
        make_custom(tmp_path, extra={"label": values + empty}, images=False)
        with pytest.raises(DatasetError) as err:
            read_custom(tmp_path / "manifest.csv")
        assert problems(err)[0].startswith(message), problems(err)
    make_custom(tmp_path, extra={"label": [0, 0, 1, 1, 3, "", "", "", "", ""]}, images=False)
    with pytest.raises(DatasetError, match="line 6, column label: '3': only train rows take a label"):
        read_custom(tmp_path / "manifest.csv")


def test_missing_and_unreadable_images_listed_together_with_their_lines(tmp_path):
    manifest = make_custom(tmp_path)
    (tmp_path / "images/0002/b.jpg").unlink()  # line 5
    truncate(tmp_path / "images/0006/b.jpg")  # line 9
    with pytest.raises(DatasetError, match=r"2 bad file\(s\)") as err:
        prepare_manifest(custom_config(manifest))
    text = str(err.value)
    assert "manifest.csv line 5, column path: image not found" in text
    assert "manifest.csv line 9, column path: unreadable or truncated image" in text
    assert "prepare.on_bad_image: skip" in text
    table, rejects = prepare_manifest(custom_config(manifest, on_bad_image="skip"))
    assert sorted(r.path for r in rejects) == [str(tmp_path / "images/0002/b.jpg"), str(tmp_path / "images/0006/b.jpg")]
    assert len(table) == len(CUSTOM_ROWS) - 2


def test_query_without_a_gallery_match_is_noted_per_row_kept_and_skipped_by_the_evaluator(tmp_path, capsys):
    rows = rows_with((7, ("images/0006/b.jpg", 5, 0, "gallery")))  # pid 6 leaves the gallery: query line 7 unmatched
    manifest = make_custom(tmp_path, rows)
    table, _ = prepare_manifest(custom_config(manifest))
    out = capsys.readouterr().out
    assert "1 of 2 queries have no true match in the gallery" in out
    assert "line 7: pid 6 is not in the gallery" in out
    assert "line 7: pid 6" in table.schema.metadata[b"notes"].decode()
    rows = table.to_pylist()
    assert sum(r["split"] == "query" for r in rows) == 2  # kept: the evaluator skips and counts it
    query = [r for r in rows if r["split"] == "query"]
    gallery = [r for r in rows if r["split"] == "gallery"]
    result = evaluate(np.random.default_rng(0).random((2, len(gallery))), [r["pid"] for r in query],
                      [r["pid"] for r in gallery], [r["camid"] for r in query], [r["camid"] for r in gallery])
    assert (result.n_query, result.n_query_valid) == (2, 1)


def test_same_camera_only_matches_are_named_and_no_match_at_all_is_an_error(tmp_path):
    rows = rows_with((6, ("images/0005/b.jpg", 5, 0, "gallery")))  # pid 5 only in camera 0, its query's camera
    manifest = make_custom(tmp_path, rows)
    skipped = unmatched_queries(load_dataset("custom", manifest))
    assert [(q.pid, why) for q, why in skipped] == [(5, "pid 5 is in the gallery only in camera 0, the query's own, "
                                                        "and the protocol discards same-camera matches")]
    rows = rows_with((6, ("images/0005/b.jpg", 5, 0, "gallery")), (7, ("images/0006/b.jpg", 7, 0, "gallery")))
    make_custom(tmp_path, rows, images=False)
    with pytest.raises(DatasetError, match="no query has a true match in the gallery") as err:
        prepare_manifest(custom_config(manifest))
    assert "line 6: pid 5 is in the gallery only in camera 0" in str(err.value)
    assert "line 7: pid 6 is not in the gallery" in str(err.value)


def test_unmatched_queries_agree_with_the_evaluator(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(f"g/{i}.jpg", int(rng.integers(-1, 6)), int(rng.integers(0, 3)), "gallery") for i in range(40)]
    rows += [(f"q/{i}.jpg", int(rng.integers(0, 8)), int(rng.integers(0, 3)), "query") for i in range(30)]
    records = [ImageRecord(*r) for r in rows]
    q = [r for r in records if r.split == "query"]
    g = [r for r in records if r.split == "gallery"]
    positives = count_positives(np.array([r.pid for r in q]), np.array([r.camid for r in q]),
                                np.array([r.pid for r in g]), np.array([r.camid for r in g]))
    assert {r.path for r, _ in unmatched_queries(records)} == {r.path for r, n in zip(q, positives, strict=True) if n == 0}


def test_single_camera_needs_same_camera_keep_and_then_scores_every_match(tmp_path, capsys):
    rows = [(p, pid, 0, s) for p, pid, _, s in CUSTOM_ROWS]
    manifest = make_custom(tmp_path, rows)
    with pytest.raises(DatasetError, match="every query and gallery image is from camera 0.*prepare.same_camera: keep"):
        prepare_manifest(custom_config(manifest))
    table, _ = prepare_manifest(custom_config(manifest, same_camera="keep"))
    out = capsys.readouterr().out
    assert "one camera (0)" in out and "same_camera: keep" in out
    assert table.schema.metadata[b"same_camera"] == b"keep"
    rows = table.to_pylist()
    query = [r for r in rows if r["split"] == "query"]
    gallery = [r for r in rows if r["split"] == "gallery"]
    assert {r["camid"] for r in query} == {-1} and {r["camid"] for r in gallery} == {0}
    dist = np.ones((2, len(gallery)))
    result = evaluate(dist, [r["pid"] for r in query], [r["pid"] for r in gallery], [r["camid"] for r in query],
                      [r["camid"] for r in gallery])
    assert result.n_query_valid == 2


def test_prepare_manifest_end_to_end_gives_the_manifest_schema(tmp_path, capsys):
    manifest = make_custom(tmp_path / "mydata")
    cfg = custom_config(manifest)
    assert cfg.dataset_root == (tmp_path / "mydata").as_posix()
    table, rejects = prepare_manifest(cfg)
    assert rejects == [] and table.schema == SCHEMA
    ids = table.column("image_id").to_pylist()
    assert ids[:2] == ["train/images/0001/a", "train/images/0001/b"] and len(set(ids)) == len(ids)  # a.jpg repeats
    assert {(r["height"], r["width"]) for r in table.to_pylist()} == {(16 + i, 8) for i in range(len(CUSTOM_ROWS))}
    assert [(r["pid"], r["label"]) for r in table.to_pylist() if r["split"] == "train"] == [(1, 0), (1, 0), (2, 1), (2, 1)]
    assert "DVC tracks it but not the images" in capsys.readouterr().out  # root names the file, not its folder
    write_manifest(tmp_path / "out.parquet", table, dataset=cfg.dataset, root=cfg.dataset_root)  # as the stage does
    meta = parquet_metadata(tmp_path / "out.parquet")
    assert meta["dataset"] == "custom" and meta["manifest"] == manifest.as_posix() and meta["same_camera"] == "exclude"
    assert (meta["train_ids"], meta["query_images"], meta["gallery_ids"]) == ("2", "2", "3")
    read, root = read_manifest(tmp_path / "out.parquet")
    assert all((root / p).is_file() for p in read.column("path").to_pylist())


def test_root_may_be_the_folder_and_paths_absolute(tmp_path):
    outside = write_dummy(tmp_path / "elsewhere" / "x.jpg")
    rows = rows_with((9, (str(outside), -1, 0, "gallery")))
    make_custom(tmp_path / "mydata", rows[:9], name="manifest.parquet")
    make_custom(tmp_path / "mydata", rows, name="manifest.parquet", images=False)
    cfg = custom_config(tmp_path / "mydata")
    assert cfg.dataset_root == str(tmp_path / "mydata")
    table, _ = prepare_manifest(cfg)
    assert str(outside) in table.column("path").to_pylist()
    notes = table.schema.metadata[b"notes"].decode()
    assert f"1 image(s) lie outside {tmp_path / 'mydata'}" in notes and "DVC tracks it but" not in notes
    make_custom(tmp_path / "mydata", rows, images=False)  # manifest.csv beside manifest.parquet
    with pytest.raises(DatasetError, match="expected exactly one of manifest.csv, manifest.parquet"):
        read_custom(tmp_path / "mydata")
    with pytest.raises(DatasetError, match="folder holding manifest.csv or manifest.parquet"):
        read_custom(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="file not found"):
        read_custom(tmp_path / "nowhere.csv")


def test_prepare_config_same_camera():
    assert typing.get_args(typing.get_type_hints(PrepareConfig)["dataset"]) == DATASETS
    assert from_mapping(PrepareConfig, {}, "prepare").same_camera == "exclude"
    with pytest.raises(ConfigError, match="prepare.same_camera"):
        from_mapping(PrepareConfig, {"same_camera": "sometimes"}, "prepare")
    with pytest.raises(ConfigError, match="same_camera: keep is for dataset custom only"):
        from_mapping(PrepareConfig, {"dataset": "market1501", "same_camera": "keep"}, "prepare")
    assert from_mapping(PrepareConfig, {"dataset": "custom", "root": "d/m.csv"}, "prepare").dataset_root == "d"
