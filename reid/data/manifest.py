"""The manifest: one Parquet table listing every image of a dataset (SPEC §4).

Columns: ``image_id`` (``<split>/<file stem>``, unique and stable), ``split``, ``pid``,
``camid`` (0-based), ``path`` (relative to the dataset root, which the schema metadata
``root`` holds), ``height``, ``width`` (decoded, so corrupt files are caught here) and
``label`` (contiguous train label 0..N-1 by sorted pid; -1 on query/gallery rows).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from reid.data.datasets import DatasetError, ImageRecord, Reject, load_dataset, sort_records
from reid.io import ImageReadError, parquet_metadata, read_image, write_parquet_atomic, write_text_atomic

SYNTHETIC_ROOT = "data/synth/market"

SCHEMA = pa.schema([
    ("image_id", pa.string()), ("split", pa.string()), ("pid", pa.int32()), ("camid", pa.int32()),
    ("path", pa.string()), ("height", pa.int32()), ("width", pa.int32()), ("label", pa.int32()),
])


@dataclass
class PrepareConfig:
    """params.yaml section ``prepare``."""

    dataset: Literal["synthetic", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected",
                     "msmt17", "cuhk01"] = "synthetic"
    # The dataset folder (for every dataset, the synthetic one too). Never null: dvc.yaml depends
    # on ${prepare.root}, and a null path makes every dvc command fail with "unexpected error".
    root: str = SYNTHETIC_ROOT
    on_bad_image: Literal["fail", "skip"] = "fail"
    split_seed: int = 0  # CUHK01's random 485/486 identity split
    num_workers: int = 4  # decoding threads (OpenCV releases the GIL)

    def validate(self) -> None:
        if not self.root.strip():
            raise ValueError("root must be the dataset folder, got an empty string")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")

    @property
    def dataset_root(self) -> str:
        return self.root


def image_size(path: str | os.PathLike) -> tuple[int, int] | str:
    """(height, width) of a fully decoded image, or the reason it is unreadable."""
    try:
        image = read_image(path)
    except ImageReadError as err:
        return str(err)
    return image.shape[0], image.shape[1]


def image_sizes(paths: list[Path], *, num_workers: int = 4, desc: str = "decode") -> list[tuple[int, int] | str]:
    """`image_size` of every path, in order, decoded on a thread pool with a progress bar."""
    # Chunks of paths per task: one future per image costs as much as decoding a small JPEG.
    chunks = [paths[i:i + 64] for i in range(0, len(paths), 64)]
    sizes: list[tuple[int, int] | str] = []
    with ThreadPoolExecutor(max_workers=num_workers) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", mininterval=1.0) as bar:
        for chunk_sizes in pool.map(lambda chunk: [image_size(p) for p in chunk], chunks):
            sizes.extend(chunk_sizes)
            bar.update(len(chunk_sizes))
    return sizes


def assign_labels(records: list[ImageRecord]) -> dict[int, int]:
    """Contiguous train label per train pid, in sorted pid order."""
    return {pid: label for label, pid in enumerate(sorted({r.pid for r in records if r.split == "train"}))}


def image_id(record: ImageRecord) -> str:
    return f"{record.split}/{Path(record.path).stem}"


def build_manifest(records: list[ImageRecord], root: str | os.PathLike, *,
                   on_bad_image: Literal["fail", "skip"] = "fail",
                   num_workers: int = 4) -> tuple[pa.Table, list[Reject]]:
    """Decode every image under `root` and tabulate it; returns (table, rejected images).

    on_bad_image="fail" raises ImageReadError listing ALL unreadable paths at once;
    "skip" drops them from the table and returns them as rejects. Labels are assigned
    after skipping, so they stay contiguous.
    """
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    root = Path(root)
    records = sort_records(records)
    if not records:
        raise DatasetError(f"no images found under {root}")
    _check_unique_ids(records)
    if bad_train := sorted({r.pid for r in records if r.split == "train" and r.pid < 0}):
        raise DatasetError(f"{root}: train records with negative pid(s) {bad_train}")

    sizes = image_sizes([root / r.path for r in records], num_workers=num_workers)
    rejects = [Reject(str(root / r.path), s) for r, s in zip(records, sizes, strict=True) if isinstance(s, str)]
    if rejects and on_bad_image == "fail":
        lines = "\n  ".join(r.path for r in rejects)
        raise ImageReadError(f"{len(rejects)} unreadable or truncated image(s) (set prepare.on_bad_image: skip "
                             f"to drop them):\n  {lines}")
    kept = [(r, s) for r, s in zip(records, sizes, strict=True) if not isinstance(s, str)]
    labels = assign_labels([r for r, _ in kept])
    table = pa.table({
        "image_id": [image_id(r) for r, _ in kept],
        "split": [r.split for r, _ in kept],
        "pid": [r.pid for r, _ in kept],
        "camid": [r.camid for r, _ in kept],
        "path": [r.path for r, _ in kept],
        "height": [s[0] for _, s in kept],
        "width": [s[1] for _, s in kept],
        "label": [labels.get(r.pid, -1) if r.split == "train" else -1 for r, _ in kept],
    }, schema=SCHEMA)
    return table, rejects


def prepare_manifest(cfg: PrepareConfig) -> tuple[pa.Table, list[Reject]]:
    """The prepare stage's work: load dataset `cfg.dataset`, decode every image; (table, rejected files).

    Wrongly named and unreadable files are all gathered before deciding, so that in fail mode
    one error lists every bad path (a folder with both kinds used to report only the names).
    """
    root = cfg.dataset_root
    misnamed: list[Reject] = []
    records = load_dataset(cfg.dataset, root, seed=cfg.split_seed, rejects=misnamed)
    if not records and misnamed and cfg.on_bad_image == "fail":
        raise DatasetError(bad_files_message(misnamed, []))
    table, unreadable = build_manifest(records, root, on_bad_image="skip", num_workers=cfg.num_workers)
    if cfg.on_bad_image == "fail" and (misnamed or unreadable):
        raise DatasetError(bad_files_message(misnamed, unreadable))
    return table, misnamed + unreadable


def bad_files_message(misnamed: list[Reject], unreadable: list[Reject]) -> str:
    """One error text listing every wrongly named and every unreadable file, each with its reason."""
    lines = "\n  ".join(f"{r.path}: {r.reason}" for r in sorted(misnamed + unreadable))
    return (f"{len(misnamed) + len(unreadable)} bad file(s): {len(misnamed)} wrongly named, {len(unreadable)} "
            f"unreadable or truncated (set prepare.on_bad_image: skip to drop them):\n  {lines}")


def _check_unique_ids(records: list[ImageRecord]) -> None:
    seen: dict[str, str] = {}
    clashes = []
    for r in records:
        key = image_id(r)
        if key in seen:
            clashes.append(f"{seen[key]} and {r.path} -> {key}")
        seen.setdefault(key, r.path)
    if clashes:
        raise DatasetError("image_id clashes (same split and file stem):\n  " + "\n  ".join(clashes))


def split_counts(table: pa.Table) -> dict[str, int]:
    """Images and identities per split, e.g. {'train_images': 12936, 'train_ids': 751, ...}."""
    out = {}
    splits = table.column("split").to_pylist()
    pids = table.column("pid").to_pylist()
    for split in ("train", "query", "gallery"):
        chosen = [p for s, p in zip(splits, pids, strict=True) if s == split]
        out[f"{split}_images"] = len(chosen)
        out[f"{split}_ids"] = len(set(chosen) - {-1})
    return out


def write_manifest(path: str | os.PathLike, table: pa.Table, *, dataset: str, root: str | os.PathLike) -> None:
    """Write the manifest atomically with its dataset name and root in the schema metadata."""
    meta = {"dataset": dataset, "root": Path(root).as_posix()}
    meta.update({k: str(v) for k, v in split_counts(table).items()})
    write_parquet_atomic(path, table, meta)


def write_rejects(path: str | os.PathLike, rejects: list[Reject]) -> None:
    """One ``path<TAB>reason`` line per rejected file, sorted; an empty file when there are none."""
    write_text_atomic(path, "".join(f"{r.path}\t{r.reason}\n" for r in sorted(rejects)))


def read_manifest(path: str | os.PathLike) -> tuple[pa.Table, Path]:
    """(table, dataset root) of a manifest; image files are at ``root / table['path']``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path} (run the prepare stage)")
    table = pq.read_table(path)
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: not a manifest, missing column(s) {', '.join(missing)}")
    root = parquet_metadata(path).get("root")
    if root is None:
        raise DatasetError(f"{path}: no 'root' in the schema metadata")
    return table, Path(root)
