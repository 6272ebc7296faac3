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

Images are not decoded here; `reid.data.manifest` does that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io

Split = Literal["train", "query", "gallery"]
SPLITS: tuple[str, ...] = ("train", "query", "gallery")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


class DatasetError(ValueError):
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


# ----------------------------------------------------------------------------- dispatch

DATASETS: tuple[str, ...] = ("synthetic", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected",
                             "msmt17", "cuhk01")


def load_dataset(name: str, root: str | Path, *, seed: int = 0,
                 rejects: list[Reject] | None = None) -> list[ImageRecord]:
    """Records of dataset `name` (one of DATASETS) at `root`; `seed` only matters for CUHK01's split."""
    loaders: dict[str, Callable[[], list[ImageRecord]]] = {
        "synthetic": lambda: load_synthetic(root, rejects=rejects),
        "market1501": lambda: load_market1501(root, rejects=rejects),
        "dukemtmc": lambda: load_dukemtmc(root, rejects=rejects),
        "cuhk03_labeled": lambda: load_cuhk03(root, "labeled", rejects=rejects),
        "cuhk03_detected": lambda: load_cuhk03(root, "detected", rejects=rejects),
        "msmt17": lambda: load_msmt17(root, rejects=rejects),
        "cuhk01": lambda: load_cuhk01(root, seed=seed, rejects=rejects),
    }
    if name not in loaders:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return loaders[name]()
