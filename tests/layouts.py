"""Tiny on-disk dataset layouts for the dataset/manifest/PIT tests (real folder and file naming)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.io


def write_dummy(path: Path, size: tuple[int, int] = (16, 8), value: int = 0) -> Path:
    """A small image (JPEG or PNG by suffix) whose pixels depend on `value`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    image = np.full((h, w, 3), (value * 37) % 256, np.uint8)
    image[:, : w // 2, 1] = 200
    assert cv2.imwrite(str(path), image)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# Market-1501: (folder, name) with junk -1 and distractor 0000 in the gallery.
MARKET_FILES = [
    ("bounding_box_train", "0002_c1s1_000451_03.jpg"),
    ("bounding_box_train", "0002_c2s1_000301_01.jpg"),
    ("bounding_box_train", "0007_c3s3_077419_03.jpg"),
    ("bounding_box_train", "0007_c6s3_077469_02.jpg"),
    ("bounding_box_train", "-1_c1s1_000401_03.jpg"),  # junk in train: dropped
    ("query", "0001_c1s1_001051_00.jpg"),
    ("query", "0003_c2s1_000551_00.jpg"),
    ("bounding_box_test", "0001_c2s1_000301_02.jpg"),
    ("bounding_box_test", "0001_c5s1_000201_01.jpg"),
    ("bounding_box_test", "0003_c1s1_000451_01.jpg"),
    ("bounding_box_test", "0000_c6s1_000001_04.jpg"),  # distractor
    ("bounding_box_test", "-1_c3s1_000026_01.jpg"),  # junk
]


def make_market(root: Path, files=MARKET_FILES) -> Path:
    for i, (folder, name) in enumerate(files):
        write_dummy(root / folder / name, size=(16 + i, 8), value=i)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0\1")  # real Market ships one
    return root


DUKE_FILES = [
    ("bounding_box_train", "0005_c2_f0046985.jpg"),
    ("bounding_box_train", "0005_c5_f0051341.jpg"),
    ("bounding_box_train", "0008_c1_f0061158.jpg"),
    ("query", "0011_c1_f0049563.jpg"),
    ("bounding_box_test", "0011_c5_f0098767.jpg"),
    ("bounding_box_test", "0019_c8_f0043231.jpg"),
]


def make_duke(root: Path) -> Path:
    for i, (folder, name) in enumerate(DUKE_FILES):
        write_dummy(root / folder / name, value=i)
    return root


def make_cuhk03(root: Path, kind: str = "labeled", *, zero_based: bool = False) -> tuple[Path, list[str], np.ndarray]:
    """3 identities x 2 views x 2 images; pid 1 train, pids 2-3 test (view 1 query, view 2 gallery).

    Returns (root, filelist, labels). Labels are global pids (101, 102, 103) so that a
    record's pid can be checked against its file name.
    """
    names, labels, cams = [], [], []
    for p in (1, 2, 3):
        for view in (1, 2):
            for img in (1, 2):
                names.append(f"1_{p:03d}_{view}_{img:02d}.png")
                labels.append(100 + p)
                cams.append(view)
    for i, name in enumerate(names):
        write_dummy(root / f"images_{kind}" / name, value=i)
    idx = np.arange(len(names))
    train = idx[:4] + 1
    test = idx[4:]
    query = test[np.array(cams)[test] == 1] + 1
    gallery = test[np.array(cams)[test] == 2] + 1
    if zero_based:
        train, query, gallery = train - 1, query - 1, gallery - 1
    filelist = np.empty((len(names), 1), dtype=object)  # a MATLAB cell array, as in the real file
    filelist[:, 0] = names
    scipy.io.savemat(root / f"cuhk03_new_protocol_config_{kind}.mat", {
        "filelist": filelist, "labels": np.array(labels, np.float64)[:, None],
        "camId": np.array(cams, np.float64)[:, None],
        "train_idx": train[:, None].astype(np.float64), "query_idx": query[:, None].astype(np.float64),
        "gallery_idx": gallery[:, None].astype(np.float64),
    })
    return root, names, np.array(labels)


MSMT_LISTS = {
    "list_train.txt": ("train", ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_1.jpg 0",
                                 "0001/0001_000_03_0303morning_0020_0.jpg 1"]),
    "list_val.txt": ("train", ["0001/0001_001_07_0303noon_0021_0.jpg 1"]),
    "list_query.txt": ("test", ["0000/0000_000_02_0303afternoon_0001_0.jpg 0"]),
    "list_gallery.txt": ("test", ["0000/0000_003_15_0303afternoon_0044_0.jpg 0",
                                  "0002/0002_000_04_0303afternoon_0050_0.jpg 2"]),
}


def make_msmt17(root: Path) -> Path:
    for list_name, (folder, lines) in MSMT_LISTS.items():
        for i, line in enumerate(lines):
            write_dummy(root / folder / line.split()[0], value=i)
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def make_cuhk01(root: Path, n_ids: int = 6) -> Path:
    for p in range(1, n_ids + 1):
        for view in range(1, 5):
            write_dummy(root / "campus" / f"{p:04d}{view:03d}.png", value=p * 4 + view)
    return root


def make_pit(root: Path, stems=("a00", "a01", "b00"), *, iuv: bool = True) -> Path:
    for i, stem in enumerate(stems):
        write_dummy(root / "images" / f"{stem}.png", size=(16, 8), value=i)
        write_dummy(root / "textures" / f"{stem}.png", size=(24, 16), value=i + 1)
        if iuv:
            iuv_map = np.zeros((16, 8, 3), np.uint8)
            iuv_map[4:12, 2:6] = (i + 1, 10 * i, 255 - i)  # (I, U, V) as cv2 reads it
            (root / "gt_iuv").mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / "gt_iuv" / f"{stem}.png"), iuv_map)
    return root


# A custom manifest's rows (path, pid, camid, split): one folder per identity, file names repeated
# across folders as own data has them, JPEG and PNG mixed, a distractor (0) and junk (-1) in the gallery.
CUSTOM_ROWS = [
    ("images/0001/a.jpg", 1, 0, "train"),
    ("images/0001/b.png", 1, 1, "train"),
    ("images/0002/a.jpg", 2, 0, "train"),
    ("images/0002/b.jpg", 2, 1, "train"),
    ("images/0005/a.jpg", 5, 0, "query"),
    ("images/0006/a.png", 6, 1, "query"),
    ("images/0005/b.jpg", 5, 1, "gallery"),
    ("images/0006/b.jpg", 6, 0, "gallery"),
    ("images/0000/a.jpg", 0, 1, "gallery"),
    ("images/junk/a.jpg", -1, 0, "gallery"),
]
CUSTOM_HEADER = ["path", "pid", "camid", "split"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A CSV file as a spreadsheet exports it (header on line 1, one row per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def write_parquet(path: Path, header: list[str], rows: list[list]) -> Path:
    """A Parquet file with typed columns (ints stay ints), as pandas' to_parquet writes one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({name: [row[i] for row in rows] for i, name in enumerate(header)}), path)
    return path


def make_custom(root: Path, rows=CUSTOM_ROWS, *, name: str = "manifest.csv", extra: dict[str, list] | None = None,
                images: bool = True) -> Path:
    """Images under `root` (when `images`) and a manifest `root / name` (CSV or Parquet by suffix); returns its path.

    `extra` adds columns (name -> one value per row), e.g. a label column.
    """
    if images:
        for i, (path, *_) in enumerate(rows):
            write_dummy(root / path, size=(16 + i, 8), value=i)
    header = CUSTOM_HEADER + list(extra or {})
    table = [[*row, *(values[i] for values in (extra or {}).values())] for i, row in enumerate(rows)]
    write = write_parquet if name.endswith(".parquet") else write_csv
    return write(root / name, header, table)
