import pytest
from layouts import make_cuhk01, make_cuhk03, make_duke, make_market, make_msmt17, write_dummy

from reid.data.datasets import (
    DATASETS,
    DatasetError,
    ImageRecord,
    load_cuhk01,
    load_cuhk03,
    load_dataset,
    load_dukemtmc,
    load_market1501,
    load_msmt17,
    parse_market_name,
    sort_records,
)


def test_parse_market_name():
    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_market_name("-1_c3s1_000026_01.jpg") == (-1, 2)
    assert parse_market_name("0000_c6s1_000001_04.jpg") == (0, 5)
    assert parse_market_name("0005_c2_f0046985.jpg") == (5, 1)  # DukeMTMC-reID
    for bad in ("holiday.jpg", "0002_c0s1_000451_03.jpg", "0002-c1s1_000451_03.jpg", "x0002_c1s1_0.jpg"):
        with pytest.raises(ValueError, match="expected"):
            parse_market_name(bad)


def test_market_rules_junk_distractors_and_order(tmp_path):
    records = load_market1501(make_market(tmp_path))
    assert records == sort_records(records)
    assert [r.split for r in records] == ["train"] * 4 + ["query"] * 2 + ["gallery"] * 5
    train = [r for r in records if r.split == "train"]
    assert all(r.pid >= 0 for r in train)  # junk dropped from train
    gallery = {r.path: r for r in records if r.split == "gallery"}
    assert gallery["bounding_box_test/-1_c3s1_000026_01.jpg"] == ImageRecord(
        "bounding_box_test/-1_c3s1_000026_01.jpg", -1, 2, "gallery")
    assert gallery["bounding_box_test/0000_c6s1_000001_04.jpg"].pid == 0  # distractor stays
    assert records[0] == ImageRecord("bounding_box_train/0002_c1s1_000451_03.jpg", 2, 0, "train")
    assert {r.camid for r in records} == {0, 1, 2, 4, 5}  # 0-based


def test_market_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=f"folder not found: {tmp_path / 'nowhere'}"):
        load_market1501(tmp_path / "nowhere")
    root = make_market(tmp_path / "m")
    for f in (root / "query").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=f"no images in folder: {root / 'query'}"):
        load_market1501(root)
    (root / "query").rmdir()
    with pytest.raises(DatasetError, match=f"folder not found: {root / 'query'}"):
        load_market1501(root)


def test_wrongly_named_files_all_listed_or_skipped(tmp_path):
    root = make_market(tmp_path)
    write_dummy(root / "query" / "holiday.jpg")
    write_dummy(root / "bounding_box_test" / "0003_cXs1_000001_01.jpg")
    with pytest.raises(DatasetError, match="2 wrongly named") as err:
        load_market1501(root)
    assert "holiday.jpg" in str(err.value) and "0003_cXs1_000001_01.jpg" in str(err.value)
    rejects = []
    records = load_market1501(root, rejects=rejects)
    assert sorted(r.path for r in rejects) == sorted([str(root / "query" / "holiday.jpg"),
                                                     str(root / "bounding_box_test" / "0003_cXs1_000001_01.jpg")])
    assert len(records) == 11


def test_duke(tmp_path):
    records = load_dukemtmc(make_duke(tmp_path))
    assert [(r.pid, r.camid, r.split) for r in records] == [
        (5, 1, "train"), (5, 4, "train"), (8, 0, "train"), (11, 0, "query"), (11, 4, "gallery"), (19, 7, "gallery")]


def test_cuhk03_one_based_indices(tmp_path):
    root, names, labels = make_cuhk03(tmp_path, "detected")
    records = load_cuhk03(root, "detected")
    by_split = {s: [r for r in records if r.split == s] for s in ("train", "query", "gallery")}
    assert [len(v) for v in by_split.values()] == [4, 4, 4]
    # Each file name carries its pid (1_PPP_V_II.png -> 100 + PPP) and view: an off-by-one
    # index would pair a file with its neighbour's label/camera.
    for r in records:
        _, p, view, _ = r.path.split("/")[-1].split("_")
        assert r.pid == 100 + int(p) and r.camid == int(view) - 1
        assert r.path.startswith("images_detected/")
    assert {r.pid for r in by_split["train"]} == {101}
    assert {r.camid for r in by_split["query"]} == {0} and {r.camid for r in by_split["gallery"]} == {1}
    # the last file (index N, 1-based) must be reachable
    assert f"images_detected/{names[-1]}" in {r.path for r in records}


def test_cuhk03_rejects_zero_based_and_missing_files(tmp_path):
    root, _, _ = make_cuhk03(tmp_path / "z", zero_based=True)
    with pytest.raises(DatasetError, match="1-based"):
        load_cuhk03(root, "labeled")
    with pytest.raises(DatasetError, match="cuhk03_new_protocol_config_detected.mat"):
        load_cuhk03(root, "detected")
    (root / "cuhk03_new_protocol_config_labeled.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cuhk03_new_protocol_config_labeled.mat"):
        load_cuhk03(root, "labeled")


def test_msmt17(tmp_path):
    root = make_msmt17(tmp_path)
    records = load_msmt17(root)
    assert [(r.split, r.pid, r.camid) for r in records] == [
        ("train", 0, 0), ("train", 0, 4), ("train", 1, 2), ("train", 1, 6),
        ("query", 0, 1), ("gallery", 0, 14), ("gallery", 2, 3)]
    assert records[0].path == "train/0000/0000_000_01_0303morning_0015_0.jpg"
    (root / "list_val.txt").write_text("0001/0001_001_07_0303noon_0021_0.jpg\n")
    with pytest.raises(DatasetError, match="list_val.txt:1"):
        load_msmt17(root)
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match="file not found.*list_val.txt"):
        load_msmt17(root)


def test_cuhk01_seeded_split(tmp_path):
    root = make_cuhk01(tmp_path, n_ids=7)
    records = load_cuhk01(root, seed=0)
    train_ids = {r.pid for r in records if r.split == "train"}
    test_ids = {r.pid for r in records if r.split != "train"}
    assert len(train_ids) == 3 and len(test_ids) == 4 and not train_ids & test_ids
    assert all(r.camid == 0 for r in records if r.split == "query")
    assert all(r.camid == 1 for r in records if r.split == "gallery")
    assert sum(r.split == "query" for r in records) == 8  # 2 camera-A images per test identity
    assert load_cuhk01(root, seed=0) == records
    splits = {frozenset(r.pid for r in load_cuhk01(root, seed=s) if r.split == "train") for s in range(6)}
    assert len(splits) > 1  # the seed matters
    write_dummy(root / "campus" / "0001005.png")
    with pytest.raises(DatasetError, match="0001005.png"):
        load_cuhk01(root)


def test_load_dataset_dispatch(tmp_path):
    market = make_market(tmp_path / "m")
    assert load_dataset("synthetic", market) == load_market1501(market)
    with pytest.raises(DatasetError, match="unknown dataset 'viper'"):
        load_dataset("viper", market)
    assert set(DATASETS) == {"synthetic", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected",
                             "msmt17", "cuhk01", "custom"}


def test_market_junk_query_dropped(tmp_path):
    root = make_market(tmp_path)
    write_dummy(root / "query" / "-1_c2s1_000001_00.jpg")
    queries = [r for r in load_market1501(root) if r.split == "query"]
    assert [r.pid for r in queries] == [1, 3]  # a query without identity cannot be evaluated
