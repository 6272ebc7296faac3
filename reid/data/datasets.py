"""Dataset loaders: every layout becomes one sorted list of `ImageRecord`s (SPEC §4).

Conventions shared by all loaders:

* ``split`` is ``train``, ``query`` or ``gallery``; ``camid`` is 0-based; ``path`` is
  relative to the dataset root (POSIX separators), so a manifest does not depend on where
  the data sits.
* Records are sorted by (split, path): unsorted globbing and ``set`` relabelling broke
  other toolboxes on multi-GPU runs.
* Market-style rules (Market-1501, DukeMTMC-reID, the synthetic world): pid -1 (junk) is
  dropped from train and query and kept in the gallery with pid -1, which the evaluator
  ignores; pid 0 (distractor) stays in the gallery as a negative.
* A wrongly named file, a missing or empty folder raise `DatasetError` naming the path(s)
  (all wrongly named files in one error). Pass a ``rejects`` list to skip wrongly named
  files instead; each is appended there as a `Reject`.

``custom`` reads your own manifest file (CSV or Parquet: ``path, pid, camid, split`` and an
optional ``label``) instead of a folder layout; every bad row is reported in one error naming its
line (CSV, header = line 1) or row (Parquet, 0-based) and column.

Images are not decoded here; `reid.data.manifest` does that.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reid.config import InputError

Split = Literal["train", "query", "gallery"]
SPLITS: tuple[str, ...] = ("train", "query", "gallery")
MAX_ID = 2**31 - 1  # pid and camid are int32 columns of the manifest (reid.data.manifest)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
# The synthetic world's extra renders of training identities (Market layout beside bounding_box_train),
# for the lite DensePose only; not a reID split.
DENSEPOSE_FOLDER = "densepose_train"


class DatasetError(InputError):
    """A dataset layout problem: missing/empty folder, wrongly named file, bad protocol file."""


@dataclass(frozen=True, order=True)
class ImageRecord:
    path: str  # relative to the dataset root, POSIX separators
    pid: int
    camid: int  # 0-based
    split: str  # train | query | gallery


@dataclass(frozen=True, order=True)
class Reject:
    path: str
    reason: str


def sort_records(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Records in canonical order: split (train, query, gallery), then path."""
    return sorted(records, key=lambda r: (SPLITS.index(r.split), r.path, r.pid, r.camid))


# ----------------------------------------------------------------------------- helpers

def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(f"folder not found: {path}")
    return path


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"file not found: {path}")
    return path


def list_images(folder: Path) -> list[Path]:
    """Sorted image files directly inside `folder` (other files such as Thumbs.db are ignored)."""
    _require_dir(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"no images in folder: {folder}")
    return files


def _report_bad_names(bad: list[Reject], rejects: list[Reject] | None) -> None:
    """Raise one error listing every wrongly named file, or hand them to `rejects`."""
    if not bad:
        return
    if rejects is not None:
        rejects.extend(bad)
        return
    lines = "\n  ".join(f"{r.path}: {r.reason}" for r in bad)
    raise DatasetError(f"{len(bad)} wrongly named file(s):\n  {lines}")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# ----------------------------------------------------------------------------- Market / Duke

# Market-1501 "0002_c1s1_000451_03.jpg", junk "-1_c1s1_...", DukeMTMC-reID "0005_c2_f0046985.jpg".
_MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)(?:s\d+)?_")


def parse_market_name(name: str) -> tuple[int, int]:
    """(pid, 0-based camid) from a Market-1501 / DukeMTMC-reID file name; ValueError if it does not match."""
    match = _MARKET_NAME.match(name)
    if match is None or int(match.group(2)) < 1:
        raise ValueError(f"expected PPPP_cC[sS]_... (pid -1 or digits, camera from 1), got {name!r}")
    return int(match.group(1)), int(match.group(2)) - 1


MARKET_FOLDERS: dict[str, str] = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def load_market1501(root: str | Path, *, rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """Market-1501 layout (also DukeMTMC-reID, CUHK03-NP and the synthetic world's export)."""
    root = Path(root)
    _require_dir(root)
    records, bad = [], []
    for split, folder in MARKET_FOLDERS.items():
        for path in list_images(root / folder):
            try:
                pid, camid = parse_market_name(path.name)
            except ValueError as err:
                bad.append(Reject(str(path), str(err)))
                continue
            if pid == -1 and split != "gallery":
                continue  # junk: useless for training, a query without identity
            records.append(ImageRecord(_rel(path, root), pid, camid, split))
    _report_bad_names(bad, rejects)
    return sort_records(records)


load_dukemtmc = load_market1501
load_synthetic = load_market1501


# ----------------------------------------------------------------------------- CUHK03 (new protocol)

def _mat_strings(array: np.ndarray) -> list[str]:
    """Strings from a MATLAB cell array (object array) or char matrix, as scipy.io.loadmat returns them."""
    if array.dtype.kind == "U":
        return [str(s).strip() for s in array.ravel()]
    return [str(np.asarray(item).ravel()[0]).strip() for item in array.ravel()]


def _mat_indices(mat: dict, key: str, n: int, where: Path) -> np.ndarray:
    """0-based indices from the protocol's 1-based `key`, with range checks naming the file."""
    idx = np.asarray(mat[key]).astype(np.int64).ravel()
    if idx.size and (idx.min() < 1 or idx.max() > n):
        raise DatasetError(f"{where}: {key} must be 1-based indices in 1..{n} (MATLAB), "
                           f"got range {idx.min()}..{idx.max()}")
    return idx - 1


def load_cuhk03(root: str | Path, kind: Literal["labeled", "detected"] = "labeled", *,
                rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """CUHK03 new protocol (767 train / 700 test identities).

    `root` holds ``cuhk03_new_protocol_config_<kind>.mat`` (filelist, labels, camId,
    train_idx, query_idx, gallery_idx; indices 1-based) and ``images_<kind>/`` with the
    files the filelist names (e.g. ``1_001_1_01.png``, as torchreid extracts them).
    pid = labels, camid = camId - 1. `rejects` is accepted for a uniform signature;
    the protocol file fixes every name, so nothing here can be wrongly named.
    """
    root = Path(root)
    mat_path = _require_file(root / f"cuhk03_new_protocol_config_{kind}.mat")
    image_dir = _require_dir(root / f"images_{kind}")
    import scipy.io  # here: only CUHK03's .mat splits need it, and it is slow to import

    try:
        mat = scipy.io.loadmat(mat_path)
    except (scipy.io.matlab.MatReadError, ValueError, NotImplementedError, OSError) as err:
        raise DatasetError(f"{mat_path}: not a readable MATLAB v5 file ({err})") from None
    missing = [k for k in ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx") if k not in mat]
    if missing:
        raise DatasetError(f"{mat_path}: missing variable(s) {', '.join(missing)}")
    files = _mat_strings(mat["filelist"])
    pids = np.asarray(mat["labels"]).astype(np.int64).ravel()
    cams = np.asarray(mat["camId"]).astype(np.int64).ravel()
    n = len(files)
    if len(pids) != n or len(cams) != n:
        raise DatasetError(f"{mat_path}: filelist ({n}), labels ({len(pids)}) and camId ({len(cams)}) differ in length")
    if n and cams.min() < 1:
        raise DatasetError(f"{mat_path}: camId must be 1-based, found {cams.min()}")
    records = []
    for split, key in (("train", "train_idx"), ("query", "query_idx"), ("gallery", "gallery_idx")):
        for i in _mat_indices(mat, key, n, mat_path):
            path = image_dir / files[i]
            records.append(ImageRecord(_rel(path, root), int(pids[i]), int(cams[i]) - 1, split))
    return sort_records(records)


# ----------------------------------------------------------------------------- MSMT17

# "0000_000_01_0303morning_0015_0.jpg": pid, running index, camera (1-based), ...
_MSMT_NAME = re.compile(r"^\d+_\d+_(\d+)_")
MSMT_LISTS: tuple[tuple[str, str, str], ...] = (
    ("train", "list_train.txt", "train"), ("train", "list_val.txt", "train"),
    ("query", "list_query.txt", "test"), ("gallery", "list_gallery.txt", "test"),
)


def _msmt_image_dir(root: Path, v1: str) -> Path:
    for name in (v1, f"mask_{v1}_v2"):  # MSMT17_V1 / MSMT17_V2 folder names
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"folder not found: {root / v1} (nor {root / f'mask_{v1}_v2'})")


def load_msmt17(root: str | Path, *, rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """MSMT17 (V1 or V2): list files with ``relpath pid`` lines; camera from the file name.

    Train = list_train + list_val (the usual 1,041 identities); query/gallery images live
    under test/ (or mask_test_v2/).
    """
    root = Path(root)
    _require_dir(root)
    records, bad = [], []
    for split, list_name, folder in MSMT_LISTS:
        list_path = _require_file(root / list_name)
        image_dir = _msmt_image_dir(root, folder)
        lines = [ln for ln in list_path.read_text().splitlines() if ln.strip()]
        if not lines:
            raise DatasetError(f"empty list file: {list_path}")
        for lineno, line in enumerate(lines, 1):
            fields = line.split()
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise DatasetError(f"{list_path}:{lineno}: expected 'relpath pid', got {line!r}")
            path = image_dir / fields[0]
            match = _MSMT_NAME.match(path.name)
            if match is None or int(match.group(1)) < 1:
                bad.append(Reject(str(path), f"expected PPPP_NNN_CC_..., camera from 1 ({list_path}:{lineno})"))
                continue
            records.append(ImageRecord(_rel(path, root), int(fields[1]), int(match.group(1)) - 1, split))
    _report_bad_names(bad, rejects)
    return sort_records(records)


# ----------------------------------------------------------------------------- CUHK01

_CUHK01_NAME = re.compile(r"^(\d{4})(\d{3})$")


def load_cuhk01(root: str | Path, *, seed: int = 0, rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """CUHK01: ``campus/PPPPNNN.png``, 4 images per identity, NNN 001-002 camera A, 003-004 camera B.

    Common setting (DSA-reID follows Cheng et al. 2016, Zhao et al. 2017): a seeded split of
    the 971 identities into floor(N/2) = 485 train and 486 test; test query = camera A
    images, gallery = camera B images (camid 0 and 1).
    """
    root = Path(root)
    records_by_pid: dict[int, list[tuple[Path, int]]] = {}
    bad = []
    for path in list_images(root / "campus"):
        match = _CUHK01_NAME.match(path.stem)
        view = int(match.group(2)) if match else 0
        if match is None or not 1 <= view <= 4:
            bad.append(Reject(str(path), f"expected PPPPNNN with NNN in 001..004, got {path.name!r}"))
            continue
        records_by_pid.setdefault(int(match.group(1)), []).append((path, 0 if view <= 2 else 1))
    _report_bad_names(bad, rejects)
    pids = np.array(sorted(records_by_pid))
    if len(pids) < 2:
        raise DatasetError(f"{root / 'campus'}: need at least 2 identities for a train/test split, found {len(pids)}")
    order = np.random.default_rng(seed).permutation(len(pids))
    train_pids = set(pids[order[: len(pids) // 2]].tolist())
    records = []
    for pid, items in records_by_pid.items():
        for path, camid in items:
            split = "train" if pid in train_pids else ("query" if camid == 0 else "gallery")
            records.append(ImageRecord(_rel(path, root), pid, camid, split))
    return sort_records(records)


# ----------------------------------------------------------------------------- custom (your own manifest)

CUSTOM_REQUIRED: tuple[str, ...] = ("path", "pid", "camid", "split")
CUSTOM_OPTIONAL: tuple[str, ...] = ("label",)
CUSTOM_SUFFIXES = frozenset({".csv", ".parquet", ".pq"})
CUSTOM_FILES: tuple[str, ...] = ("manifest.csv", "manifest.parquet")  # looked for when the root is a folder
SameCamera = Literal["exclude", "keep"]
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class CustomRow:
    where: str  # as the user finds it: "line 5" (CSV, header = line 1) or "row 3" (Parquet, 0-based)
    record: ImageRecord
    label: int | None  # the manifest's train label; None without a label column and on query/gallery rows


@dataclass
class CustomManifest:
    """A validated custom manifest: its rows in file order and the notes worth printing."""

    source: Path  # the CSV or Parquet file; record paths are relative to its folder
    rows: list[CustomRow]
    notes: list[str]

    @property
    def root(self) -> Path:
        return self.source.parent

    @property
    def records(self) -> list[ImageRecord]:
        return sort_records(r.record for r in self.rows)

    def where_of(self) -> dict[str, str]:
        """Record path -> its line/row, to name rows in errors found later (unreadable images)."""
        return {r.record.path: r.where for r in self.rows}

    def labels(self) -> dict[int, int] | None:
        """The manifest's label per train pid, or None when it has no label column."""
        if not any(r.label is not None for r in self.rows):
            return None
        return {r.record.pid: r.label for r in self.rows if r.label is not None}

    def without_split(self, split: str) -> CustomManifest:
        """The same manifest less its `split` rows (a cross-dataset target drops its train rows unread)."""
        return replace(self, rows=[r for r in self.rows if r.record.split != split])


def custom_root(root: str | Path) -> Path:
    """The folder a custom manifest's paths are relative to: the file's folder, or `root` if it is the folder.

    Decided by the suffix alone (no file system access): PrepareConfig.dataset_root calls it.
    """
    root = Path(root)
    return root.parent if root.suffix.lower() in CUSTOM_SUFFIXES else root


def custom_manifest_file(root: str | Path) -> Path:
    """The manifest file `root` names: the file itself, or the one manifest.csv / manifest.parquet in a folder."""
    root = Path(root)
    if root.suffix.lower() in CUSTOM_SUFFIXES:
        return _require_file(root)
    if not root.is_dir():
        raise DatasetError(f"custom dataset: expected a manifest file (.csv, .parquet) or a folder holding "
                           f"{' or '.join(CUSTOM_FILES)}, got {root} (not found)")
    found = [root / name for name in CUSTOM_FILES if (root / name).is_file()]
    if len(found) != 1:
        raise DatasetError(f"{root}: expected exactly one of {', '.join(CUSTOM_FILES)}, found "
                           f"{', '.join(p.name for p in found) or 'neither'}")
    return found[0]


Cells = list[tuple[str, dict[str, object]]]  # (where, {column: value}) per row


def _csv_cells(path: Path, errors: list[str]) -> tuple[list[str], Cells]:
    """Header and rows of a CSV file; stdlib csv because it knows each row's line number."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            cells: Cells = []
            for fields in reader:
                if not any(v.strip() for v in fields):
                    continue  # a blank line
                where = f"line {reader.line_num}"
                if len(fields) != len(header):
                    errors.append(f"{where}: {len(fields)} field(s), the header has {len(header)}")
                    continue
                cells.append((where, {h: (v.strip() or None) for h, v in zip(header, fields, strict=True)}))
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise DatasetError(f"{path}: not a readable CSV file ({err})") from None
    if not header:
        raise DatasetError(f"{path}: empty file, expected the header line {','.join(CUSTOM_REQUIRED)}")
    return header, cells


def _parquet_cells(path: Path) -> tuple[list[str], Cells]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{path}: not a readable Parquet file ({err})") from None
    return table.column_names, [(f"row {i}", row) for i, row in enumerate(table.to_pylist())]


def _as_int(value: object) -> int | None:
    """An integer cell (text digits, an int, or a float with an integral value as pandas writes), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value)
    return None


def _as_text(value: object) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _custom_row(where: str, cells: dict[str, object], has_label: bool, errors: list[str]) -> CustomRow | None:
    """One row as a CustomRow, or None after appending every problem it has to `errors`."""
    n_errors = len(errors)

    def bad(column: str, message: str) -> None:
        errors.append(f"{where}, column {column}: {message}")

    path, split = _as_text(cells["path"]), _as_text(cells["split"])
    pid, camid = _as_int(cells["pid"]), _as_int(cells["camid"])
    if path is None:
        bad("path", f"expected a file path, got {cells['path']!r}")
    if split not in SPLITS:
        bad("split", f"{cells['split']!r} is not one of {', '.join(SPLITS)}")
    if pid is None:
        bad("pid", f"expected an integer, got {cells['pid']!r}")
    elif pid < -1:
        bad("pid", f"{pid}: identities are >= 0, or -1 for junk (gallery rows only)")
    elif pid == -1 and split in ("train", "query"):
        bad("pid", f"-1 (junk) is for gallery rows only: a {split} row needs an identity")
    elif pid > MAX_ID:
        bad("pid", f"{pid}: identities must be <= {MAX_ID} (the manifest stores them as 32-bit integers)")
    if camid is None:
        bad("camid", f"expected an integer, got {cells['camid']!r}")
    elif camid < 0:
        bad("camid", f"{camid}: camera ids are >= 0")
    elif camid > MAX_ID:
        bad("camid", f"{camid}: camera ids must be <= {MAX_ID} (the manifest stores them as 32-bit integers)")
    label = _as_int(cells.get("label"))
    if has_label and split == "train" and (label is None or label < 0):  # too large: _label_errors' range check
        bad("label", f"expected an integer >= 0 on a train row, got {cells['label']!r} (or drop the label column)")
    elif has_label and split in ("query", "gallery") and cells["label"] is not None and label != -1:
        bad("label", f"{cells['label']!r}: only train rows take a label; leave it empty or -1 on {split} rows")
    if len(errors) > n_errors:
        return None
    record = ImageRecord(posixpath.normpath(path), pid, camid, split)
    return CustomRow(where, record, label if has_label and split == "train" else None)


def _file_key(path: Path) -> tuple[int, int] | str:
    """The file `path` names: (device, inode) where it exists, so that links to one file share a key;
    else the normalised path (a missing image is reported when the images are read)."""
    try:
        stat = os.stat(path)
    except OSError:
        return os.path.normpath(path)
    return stat.st_dev, stat.st_ino


def _duplicate_path_errors(rows: list[CustomRow], root: Path) -> list[str]:
    """Rows naming a file an earlier row names already, under the same path or another (a symbolic or hard
    link); also across splits: a query in the gallery is a leak."""
    first: dict[tuple[int, int] | str, CustomRow] = {}
    errors = []
    for row in rows:
        earlier = first.setdefault(_file_key(root / row.record.path), row)
        if earlier is row:
            continue
        if os.path.normpath(earlier.record.path) == os.path.normpath(row.record.path):
            errors.append(f"{row.where}, column path: {row.record.path} is listed already on {earlier.where}")
        else:
            errors.append(f"{row.where}, column path: {row.record.path} is the file {earlier.record.path} of "
                          f"{earlier.where} (a link): one image listed twice")
    return errors


def _outside(folder: Path, path: str) -> bool:
    """Whether manifest `path` (relative to `folder`, or absolute) lies outside `folder`."""
    base = os.path.abspath(folder)
    return os.path.commonpath([base, os.path.abspath(folder / path)]) != base


def _empty_split_errors(rows: list[CustomRow], required: tuple[str, ...] = SPLITS) -> list[str]:
    present = {r.record.split for r in rows}
    return [f"column split: no {split} rows (train is learned from, query and gallery are evaluated)"
            for split in required if split not in present]


def _label_errors(rows: list[CustomRow]) -> list[str]:
    """The label column must map train pids one to one onto 0..n-1."""
    label_of: dict[int, tuple[int, str]] = {}
    pid_of: dict[int, tuple[int, str]] = {}
    errors = []
    for row in rows:
        if row.label is None:
            continue
        pid, label = row.record.pid, row.label
        if label_of.setdefault(pid, (label, row.where))[0] != label:
            errors.append(f"{row.where}, column label: pid {pid} has label {label} here, "
                          f"{label_of[pid][0]} on {label_of[pid][1]}")
        elif pid_of.setdefault(label, (pid, row.where))[0] != pid:
            errors.append(f"{row.where}, column label: label {label} is pid {pid} here, "
                          f"pid {pid_of[label][0]} on {pid_of[label][1]}")
    if errors:
        return errors
    n = len(label_of)
    return [f"{where}, column label: {label} is out of range: labels are 0..{n - 1}, one per train identity ({n})"
            for label, (_, where) in sorted(pid_of.items()) if label >= n]


def _custom_notes(source: Path, columns: list[str], rows: list[CustomRow], *, folder_form: bool) -> list[str]:
    notes = []
    if extra := [c for c in columns if c not in CUSTOM_REQUIRED + CUSTOM_OPTIONAL]:
        notes.append(f"ignored column(s) {', '.join(extra)}: only {', '.join(CUSTOM_REQUIRED + CUSTOM_OPTIONAL)} "
                     "are read")
    if not folder_form:
        notes.append(f"prepare.root names the file, so DVC tracks it but not the images: set prepare.root to its "
                     f"folder {source.parent} (the file named {' or '.join(CUSTOM_FILES)}) to track both")
    outside = [r for r in rows if _outside(source.parent, r.record.path)]
    if folder_form and outside:
        notes.append(f"{len(outside)} image(s) lie outside {source.parent}, which DVC does not track, "
                     f"e.g. {outside[0].where}: {outside[0].record.path}")
    train = {r.record.pid for r in rows if r.record.split == "train"}
    if shared := sorted(train & {r.record.pid for r in rows if r.record.split != "train"}):
        notes.append(f"{len(shared)} identity(ies) are in train and in query/gallery (e.g. pid {shared[0]}): "
                     "the usual protocols keep them disjoint, and scores on seen identities read optimistic")
    return notes


def read_custom(root: str | Path, *, required: tuple[str, ...] = SPLITS) -> CustomManifest:
    """Read and check a custom manifest: one DatasetError lists every bad row and column.

    `root` is the manifest file (.csv, .parquet) or a folder holding manifest.csv or manifest.parquet.
    `required`: the splits that must have rows (a cross-dataset target: query and gallery alone).
    Unknown columns are ignored with a note: exports from labelling tools carry extra columns, and
    only the optional ``label`` could be lost to a typo (the note names what was ignored).
    """
    source = custom_manifest_file(root)
    errors: list[str] = []
    if source.suffix.lower() == ".csv":
        columns, cells = _csv_cells(source, errors)
    else:
        columns, cells = _parquet_cells(source)
    dup_columns = sorted({c for c in columns if columns.count(c) > 1})
    missing = [c for c in CUSTOM_REQUIRED if c not in columns]
    if missing or dup_columns:
        problem = f"missing column(s) {', '.join(missing)}" if missing else f"repeated column(s) {', '.join(dup_columns)}"
        raise DatasetError(f"{source}: {problem}; the header is {', '.join(columns) or '(empty)'}, "
                           f"expected {', '.join(CUSTOM_REQUIRED)} (and optional {', '.join(CUSTOM_OPTIONAL)})")
    if not cells and not errors:
        raise DatasetError(f"{source}: no rows below the header")
    has_label = "label" in columns
    rows = [row for where, values in cells if (row := _custom_row(where, values, has_label, errors)) is not None]
    errors += _duplicate_path_errors(rows, source.parent)
    if not errors:  # with a bad cell, an empty split or a label gap may just be that cell
        errors = _empty_split_errors(rows, required) + _label_errors(rows)
    if errors:
        raise DatasetError(f"{source}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return CustomManifest(source, rows, _custom_notes(source, columns, rows, folder_form=source != Path(root)))


def load_custom(root: str | Path, *, rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """Records of a custom manifest (see `read_custom`), paths relative to its folder (or absolute).

    `rejects` is accepted for a uniform signature: a bad row is an error, never a skipped file.
    """
    return read_custom(root).records


def unmatched_queries(records: list[ImageRecord], same_camera: SameCamera = "exclude") -> list[tuple[ImageRecord, str]]:
    """Queries the evaluation will skip, each with why: no gallery image of their pid that the protocol keeps.

    The Market-1501 protocol (same_camera="exclude") discards a query's gallery matches from its own
    camera; "keep" scores them. Gallery pid -1 is junk and never a match.
    """
    cameras: dict[int, set[int]] = {}
    for r in records:
        if r.split == "gallery" and r.pid != -1:
            cameras.setdefault(r.pid, set()).add(r.camid)
    out = []
    for q in (r for r in records if r.split == "query"):
        seen = cameras.get(q.pid, set())
        if not seen:
            out.append((q, f"pid {q.pid} is not in the gallery"))
        elif same_camera == "exclude" and seen == {q.camid}:
            out.append((q, f"pid {q.pid} is in the gallery only in camera {q.camid}, the query's own, "
                           "and the protocol discards same-camera matches"))
    return out


# ----------------------------------------------------------------------------- dispatch

DATASETS: tuple[str, ...] = ("synthetic", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected",
                             "msmt17", "cuhk01", "custom")


def load_dataset(name: str, root: str | Path, *, seed: int = 0,
                 rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """Records of dataset `name` (one of DATASETS) at `root`; `seed` only matters for CUHK01's split.

    For ``custom``, `root` is the manifest file (or its folder) and record paths are relative to its folder.
    """
    loaders: dict[str, Callable[[], list[ImageRecord]]] = {
        "synthetic": lambda: load_synthetic(root, rejects=rejects),
        "market1501": lambda: load_market1501(root, rejects=rejects),
        "dukemtmc": lambda: load_dukemtmc(root, rejects=rejects),
        "cuhk03_labeled": lambda: load_cuhk03(root, "labeled", rejects=rejects),
        "cuhk03_detected": lambda: load_cuhk03(root, "detected", rejects=rejects),
        "msmt17": lambda: load_msmt17(root, rejects=rejects),
        "cuhk01": lambda: load_cuhk01(root, seed=seed, rejects=rejects),
        "custom": lambda: load_custom(root, rejects=rejects),
    }
    if name not in loaders:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return loaders[name]()
