"""The manifest: one Parquet table listing every image of a dataset (SPEC §4).

Columns: ``image_id`` (``<split>/<file stem>``, unique and stable), ``split``, ``pid``,
``camid`` (0-based), ``path`` (relative to the dataset root, which the schema metadata
``root`` holds), ``height``, ``width`` (decoded, so corrupt files are caught here) and
``label`` (contiguous train label 0..N-1 by sorted pid; -1 on query/gallery rows).

A ``custom`` dataset (your own CSV/Parquet manifest, `reid.data.datasets.read_custom`) gives the
same table: its ``image_id`` is ``<split>/<path without suffix>`` (own data often repeats file
names across identity folders), its labels are the manifest's own when it has a valid ``label``
column, and the schema metadata adds ``manifest`` (the source file), ``same_camera`` and ``notes``
(also printed: ignored columns, queries the evaluation will skip, the camera protocol).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from reid.data.datasets import (
    SPLITS,
    DatasetError,
    ImageRecord,
    Reject,
    SameCamera,
    custom_root,
    load_dataset,
    read_custom,
    sort_records,
    unmatched_queries,
)
from reid.io import (
    ImageReadError,
    file_sha256,
    parquet_metadata,
    read_image,
    write_parquet_atomic,
    write_text_atomic,
)

SYNTHETIC_ROOT = "data/synth/market"
EVAL_SPLITS = ("query", "gallery")  # what a cross-dataset target is evaluated on

SCHEMA = pa.schema([
    ("image_id", pa.string()), ("split", pa.string()), ("pid", pa.int32()), ("camid", pa.int32()),
    ("path", pa.string()), ("height", pa.int32()), ("width", pa.int32()), ("label", pa.int32()),
])


@dataclass
class PrepareConfig:
    """params.yaml section ``prepare``."""

    dataset: Literal["synthetic", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected",
                     "msmt17", "cuhk01", "custom"] = "synthetic"
    # The dataset folder (for every dataset, the synthetic one too; for custom the manifest file or
    # its folder). Never null: dvc.yaml depends on ${prepare.root}, and a null path makes every dvc
    # command fail with "unexpected error".
    root: str = SYNTHETIC_ROOT
    on_bad_image: Literal["fail", "skip"] = "fail"
    split_seed: int = 0  # CUHK01's random 485/486 identity split
    num_workers: int = 4  # decoding threads (OpenCV releases the GIL)
    # custom only: "keep" scores a query's same-camera gallery matches, which the Market-1501
    # protocol ("exclude") discards; single-camera data has no other matches.
    same_camera: SameCamera = "exclude"

    def validate(self) -> None:
        if not self.root.strip():
            raise ValueError("root must be the dataset folder, got an empty string")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.same_camera == "keep" and self.dataset != "custom":
            raise ValueError(f"same_camera: keep is for dataset custom only; {self.dataset}'s protocol discards "
                             "same-camera matches, and its published numbers assume it")

    @property
    def dataset_root(self) -> str:
        """The folder that manifest paths are relative to (for custom: the manifest file's folder)."""
        return custom_root(self.root).as_posix() if self.dataset == "custom" else self.root


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


def path_image_id(record: ImageRecord) -> str:
    """``<split>/<path without suffix>``: the custom dataset's id, unique where file names repeat across folders."""
    return f"{record.split}/{posixpath.splitext(record.path)[0].lstrip('/')}"


def train_labels(records: list[ImageRecord], given: Mapping[int, int] | None = None) -> dict[int, int]:
    """`given` (pid -> label) when it maps the train pids of `records` onto 0..n-1, else `assign_labels`."""
    pids = {r.pid for r in records if r.split == "train"}
    if given is not None and pids <= given.keys() and {given[p] for p in pids} == set(range(len(pids))):
        return {p: given[p] for p in pids}
    return assign_labels(records)


def build_manifest(records: list[ImageRecord], root: str | os.PathLike, *,
                   on_bad_image: Literal["fail", "skip"] = "fail", num_workers: int = 4,
                   image_id_of: Callable[[ImageRecord], str] = image_id,
                   labels: Mapping[int, int] | None = None) -> tuple[pa.Table, list[Reject]]:
    """Decode every image under `root` and tabulate it; returns (table, rejected images).

    on_bad_image="fail" raises ImageReadError listing ALL unreadable paths at once;
    "skip" drops them from the table and returns them as rejects. Labels (`labels`, pid ->
    label, if given and still contiguous, else by sorted pid) are assigned after skipping, so
    they stay contiguous.
    """
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    root = Path(root)
    records = sort_records(records)
    if not records:
        raise DatasetError(f"no images found under {root}")
    _check_unique_ids(records, image_id_of)
    if bad_train := sorted({r.pid for r in records if r.split == "train" and r.pid < 0}):
        raise DatasetError(f"{root}: train records with negative pid(s) {bad_train}")

    sizes = image_sizes([root / r.path for r in records], num_workers=num_workers)
    rejects = [Reject(str(root / r.path), s) for r, s in zip(records, sizes, strict=True) if isinstance(s, str)]
    if rejects and on_bad_image == "fail":
        lines = "\n  ".join(r.path for r in rejects)
        raise ImageReadError(f"{len(rejects)} unreadable or truncated image(s) (set prepare.on_bad_image: skip "
                             f"to drop them):\n  {lines}")
    kept = [(r, s) for r, s in zip(records, sizes, strict=True) if not isinstance(s, str)]
    label_of = train_labels([r for r, _ in kept], labels)
    table = pa.table({
        "image_id": [image_id_of(r) for r, _ in kept],
        "split": [r.split for r, _ in kept],
        "pid": [r.pid for r, _ in kept],
        "camid": [r.camid for r, _ in kept],
        "path": [r.path for r, _ in kept],
        "height": [s[0] for _, s in kept],
        "width": [s[1] for _, s in kept],
        "label": [label_of.get(r.pid, -1) if r.split == "train" else -1 for r, _ in kept],
    }, schema=SCHEMA)
    return table, rejects


def prepare_manifest(cfg: PrepareConfig, *, evaluation_only: bool = False) -> tuple[pa.Table, list[Reject]]:
    """The prepare stage's work: load dataset `cfg.dataset`, decode every image; (table, rejected files).

    Wrongly named and unreadable files are all gathered before deciding, so that in fail mode
    one error lists every bad path (a folder with both kinds used to report only the names).
    `evaluation_only` (a cross-dataset target, never trained on): a custom manifest needs no train rows,
    and any it has are dropped unread.
    """
    if cfg.dataset == "custom":
        return prepare_custom(cfg, evaluation_only=evaluation_only)
    root = cfg.dataset_root
    misnamed: list[Reject] = []
    records = load_dataset(cfg.dataset, root, seed=cfg.split_seed, rejects=misnamed)
    if not records and misnamed and cfg.on_bad_image == "fail":
        raise DatasetError(bad_files_message(misnamed, []))
    table, unreadable = build_manifest(records, root, on_bad_image="skip", num_workers=cfg.num_workers)
    if cfg.on_bad_image == "fail" and (misnamed or unreadable):
        raise DatasetError(bad_files_message(misnamed, unreadable))
    return table, misnamed + unreadable


def prepare_custom(cfg: PrepareConfig, *, evaluation_only: bool = False) -> tuple[pa.Table, list[Reject]]:
    """`prepare_manifest` for a custom manifest: bad rows and bad images name their line/row; notes printed.

    Queries left without a true match (per `cfg.same_camera`) stay in the table, as the evaluator
    skips and counts them (n_query - n_query_valid); a manifest where no query has one is an error.
    `evaluation_only`: train rows are optional and dropped before any image is read.
    """
    data = read_custom(cfg.root, required=EVAL_SPLITS if evaluation_only else SPLITS)
    if evaluation_only:
        data = data.without_split("train")
    given = data.labels()
    table, unreadable = build_manifest(data.records, data.root, on_bad_image="skip", num_workers=cfg.num_workers,
                                       image_id_of=path_image_id, labels=given)
    where_of = data.where_of()
    where_of_file = {str(data.root / path): where for path, where in where_of.items()}  # build_manifest's reject paths
    unreadable = [Reject(r.path, f"{data.source.name} {where_of_file[r.path]}, column path: "
                                 f"{r.reason.removesuffix(f': {r.path}')}") for r in unreadable]
    if cfg.on_bad_image == "fail" and unreadable:
        raise DatasetError(bad_files_message([], unreadable))
    kept = [ImageRecord(path, pid, camid, split) for path, pid, camid, split in zip(
        *(table.column(c).to_pylist() for c in ("path", "pid", "camid", "split")), strict=True)]
    if emptied := [s for s in (EVAL_SPLITS if evaluation_only else SPLITS) if s not in {r.split for r in kept}]:
        raise DatasetError(f"{data.source}: no readable {' or '.join(emptied)} image left after skipping "
                           f"{len(unreadable)} unreadable one(s)")
    notes = data.notes + camera_notes(kept, where_of, cfg.same_camera, data.source)
    if given is not None and train_labels(kept, given) != given:
        notes.append("the label column no longer maps the train identities onto 0..n-1 once unreadable images are "
                     "skipped: labels recomputed by sorted pid")
    if cfg.same_camera == "keep":
        table = queries_without_camera(table)
    for note in notes:
        print(f"note: {data.source}: {note}")
    meta = {**(table.schema.metadata or {}), b"manifest": data.source.as_posix().encode(),
            b"same_camera": cfg.same_camera.encode(), b"notes": "\n".join(notes).encode()}
    return table.replace_schema_metadata(meta), unreadable


def camera_notes(records: list[ImageRecord], where_of: Mapping[str, str], same_camera: SameCamera,
                 source: Path) -> list[str]:
    """Notes on the camera protocol and on every query the evaluation will skip; DatasetError if none is left."""
    cameras = sorted({r.camid for r in records if r.split != "train"})
    notes = []
    if same_camera == "keep":
        notes.append("same_camera: keep: a query's same-camera gallery matches are scored (query rows get camid "
                     "-1, so the evaluator's same-pid-same-camera rule never fires); not comparable with "
                     "Market-protocol numbers, and optimistic when query and gallery share frames of one track")
    elif len(cameras) == 1:
        raise DatasetError(f"{source}: every query and gallery image is from camera {cameras[0]}: the Market-1501 "
                           "protocol discards a query's same-camera gallery matches, which leaves no true match "
                           "at all; set prepare.same_camera: keep to score them")
    if len(cameras) == 1:
        notes.append(f"one camera ({cameras[0]}): every true match is a same-camera match (scored: same_camera: keep)")
    skipped = unmatched_queries(records, same_camera)
    n_query = sum(r.split == "query" for r in records)
    lines = "\n  ".join(f"{where_of.get(q.path, q.path)}: {why}" for q, why in skipped)
    if skipped and len(skipped) == n_query:
        raise DatasetError(f"{source}: no query has a true match in the gallery, nothing to evaluate:\n  {lines}")
    if skipped:
        notes.append(f"{len(skipped)} of {n_query} queries have no true match in the gallery; the evaluation skips "
                     f"them (n_query - n_query_valid) and mAP_official scores them 0:\n  {lines}")
    return notes


def queries_without_camera(table: pa.Table) -> pa.Table:
    """`table` with camid -1 on query rows: no gallery item shares a query's camera, so none is discarded."""
    splits = table.column("split").to_pylist()
    camids = [-1 if s == "query" else c for s, c in zip(splits, table.column("camid").to_pylist(), strict=True)]
    return table.set_column(table.schema.get_field_index("camid"), table.schema.field("camid"),
                            pa.array(camids, pa.int32()))


def bad_files_message(misnamed: list[Reject], unreadable: list[Reject]) -> str:
    """One error text listing every wrongly named and every unreadable file, each with its reason."""
    lines = "\n  ".join(f"{r.path}: {r.reason}" for r in sorted(misnamed + unreadable))
    return (f"{len(misnamed) + len(unreadable)} bad file(s): {len(misnamed)} wrongly named, {len(unreadable)} "
            f"unreadable or truncated (set prepare.on_bad_image: skip to drop them):\n  {lines}")


def _check_unique_ids(records: list[ImageRecord], image_id_of: Callable[[ImageRecord], str] = image_id) -> None:
    seen: dict[str, str] = {}
    clashes = []
    for r in records:
        key = image_id_of(r)
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


def images_digest(table: pa.Table, root: str | os.PathLike) -> str:
    """sha256 over each manifest image's relative path and content, in manifest order: it changes exactly
    when an image the manifest names (or the list of them) changes. The stages that read images only
    through the manifest depend on this digest file instead of the dataset folder, which DVC would
    otherwise walk and stat again for every one of them (seconds per no-op `dvc repro`)."""
    digest = hashlib.sha256()
    for rel in table.column("path").to_pylist():
        digest.update(f"{rel}\0{file_sha256(Path(root) / rel)}\n".encode())
    return digest.hexdigest()


def write_images_digest(path: str | os.PathLike, table: pa.Table, root: str | os.PathLike) -> None:
    """The digest file (one hex line) of `images_digest`."""
    write_text_atomic(path, images_digest(table, root) + "\n")


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
