"""Choosing an IUV backend from the typed `densepose` config, and running it over a manifest.

Output of a run: ``iuv.parquet`` with ``image_id`` (string), ``iuv`` (lossless PNG bytes of the
uint8 [H, W, 3] IUV image, reid.io.encode_raw: I, U, V in channels 0, 1, 2), ``found`` (bool;
False = no person, IUV all background), rows in manifest order, the backend in the schema
metadata; plus metrics (reid.densepose.quality) on coverage and, where the synthetic world's
ground truth exists, IUV quality on the test identities (query + gallery rows).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from reid.densepose.base import IUVEstimator, IUVResult, read_iuv_png
from reid.densepose.detectron2 import check_config_file
from reid.densepose.oracle import gt_iuv_path
from reid.densepose.quality import CoverageStats, IUVQuality
from reid.device import check_device_settings
from reid.io import atomic_path, encode_raw, read_image

IUV_SCHEMA = pa.schema([("image_id", pa.string()), ("iuv", pa.binary()), ("found", pa.bool_())])
TEST_SPLITS = ("query", "gallery")


@dataclass
class Detectron2Options:
    config: str | None = None   # densepose_rcnn_R_50_FPN_s1x.yaml (its Base-*.yaml beside it)
    weights: str | None = None  # model_final_162be9.pkl
    score_threshold: float = 0.8
    trust_weights: bool = False  # detectron2 unpickles the weights: set true only for a file you checked


@dataclass
class PrecomputedOptions:
    root: str | None = None     # folder of IUV PNGs ...
    suffix: str = ""            # e.g. "_IUV" for DensePose's legacy <stem>_IUV.png
    on_missing: Literal["error", "not_found"] = "error"
    dump: str | None = None     # ... or an apply_net.py dump file (trusted input only)
    trust_dump: bool = False
    score_threshold: float = 0.8


@dataclass
class DensePoseConfig:
    """The `densepose` params section."""

    backend: Literal["lite", "oracle", "detectron2", "precomputed"] = "lite"
    batch_size: int = 64
    device: str = "auto"
    num_workers: int = 2  # crop-decoding threads
    detectron2: Detectron2Options = field(default_factory=Detectron2Options)
    precomputed: PrecomputedOptions = field(default_factory=PrecomputedOptions)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        check_device_settings(self.device)
        if self.backend == "detectron2":
            d = self.detectron2
            if not (d.config and d.weights):
                raise ValueError("backend detectron2 needs detectron2.config and detectron2.weights (paths)")
            check_config_file(d.config)  # trust_weights: checked when built (a profile may name untrusted files)
        if self.backend == "precomputed":
            p = self.precomputed
            if (p.root is None) == (p.dump is None):
                raise ValueError("backend precomputed needs exactly one of precomputed.root (IUV PNG folder) "
                                 "and precomputed.dump (apply_net.py dump file)")
            if p.dump is not None and not p.trust_dump:
                raise ValueError("precomputed.dump is unpickled (arbitrary code): set precomputed.trust_dump: true "
                                 "only for a dump file you made yourself")
        for name, value in (("detectron2", self.detectron2.score_threshold),
                            ("precomputed", self.precomputed.score_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}.score_threshold must lie in [0, 1], got {value}")


def build_estimator(config: DensePoseConfig, device: torch.device,
                    lite_model: str | os.PathLike | None = None) -> IUVEstimator:
    """The backend `config.backend`; heavy ones (lite, detectron2) are imported only when chosen.

    `lite_model` is the lite backend's network folder (model.pt + model.json: the train_densepose
    stage's output, which the pipeline passes); the other backends ignore it.
    """
    if config.backend == "oracle":
        from reid.densepose.oracle import OracleEstimator
        return OracleEstimator()
    if config.backend == "precomputed":
        from reid.densepose.precomputed import DumpEstimator, PrecomputedPNGEstimator
        p = config.precomputed
        if p.root is not None:
            return PrecomputedPNGEstimator(p.root, p.suffix, p.on_missing)
        return DumpEstimator(p.dump, trust_dump=p.trust_dump, score_threshold=p.score_threshold)
    if config.backend == "detectron2":
        from reid.densepose.detectron2 import Detectron2Estimator
        d = config.detectron2
        return Detectron2Estimator(d.config, d.weights, device, d.score_threshold, config.batch_size,
                                   trust_weights=d.trust_weights)
    if config.backend == "lite":
        if lite_model is None:
            raise ValueError("backend lite needs its network folder (lite_model), the train_densepose output")
        from reid.densepose.lite import load_lite_estimator
        return load_lite_estimator(lite_model, device, config.batch_size)
    raise ValueError(f"unknown densepose backend {config.backend!r}")


def _batches(paths: Sequence[Path], batch_size: int, num_workers: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    # Decode the next batch on threads while the estimator works on this one
    # (Executor.map submits a batch's reads at once and yields them in order).
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        pending = None
        for start in range(0, len(paths), batch_size):
            reads = pool.map(read_image, paths[start:start + batch_size])
            if pending is not None:
                yield pending[0], list(pending[1])
            pending = (start, reads)
        if pending is not None:
            yield pending[0], list(pending[1])


def check_result(result: IUVResult, image: np.ndarray, path: Path) -> None:
    if result.iuv.dtype != np.uint8 or result.iuv.shape != image.shape[:2] + (3,):
        raise ValueError(f"backend returned IUV {result.iuv.dtype} {result.iuv.shape} for {path} "
                         f"of size {image.shape[:2]}")


def run_densepose(estimator: IUVEstimator, manifest: pa.Table, root: Path, out_path: Path, *,
                  batch_size: int = 64, num_workers: int = 2, backend: str = "") -> dict[str, float | int]:
    """Estimate IUV for every manifest row, write `out_path` atomically, return the metrics.

    Metrics: coverage over all crops; part mIoU / UV error against gt_iuv/ on test rows where the
    ground truth exists (synthetic world), with `n_gt_images` saying how many were scored.
    """
    ids = manifest.column("image_id").to_pylist()
    paths = [p if Path(p).is_absolute() else Path(root) / p for p in map(Path, manifest.column("path").to_pylist())]
    splits = manifest.column("split").to_pylist()
    coverage, quality = CoverageStats(), IUVQuality()
    schema = IUV_SCHEMA.with_metadata({"backend": backend})
    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema) as writer, \
            tqdm(total=len(ids), desc=f"densepose ({backend})", unit="img", mininterval=1.0) as bar:
        for start, images in _batches(paths, batch_size, num_workers):
            batch_paths = paths[start:start + len(images)]
            results = estimator.predict(images, batch_paths)
            if len(results) != len(images):
                raise ValueError(f"backend returned {len(results)} results for {len(images)} crops")
            blobs, found = [], []
            for k, (result, image, path) in enumerate(zip(results, images, batch_paths, strict=True)):
                check_result(result, image, path)
                iuv = result.iuv if result.found else np.zeros_like(result.iuv)
                blobs.append(encode_raw(iuv))
                found.append(bool(result.found))
                coverage.update(iuv, result.found)
                gt = gt_iuv_path(path)
                if splits[start + k] in TEST_SPLITS and gt.is_file():
                    quality.update(iuv, read_iuv_png(gt, image.shape[:2]))
            writer.write_table(pa.table({"image_id": ids[start:start + len(images)], "iuv": blobs, "found": found},
                                        schema=schema))
            bar.update(len(images))
        if not ids:
            writer.write_table(schema.empty_table())
    metrics: dict[str, float | int] = dict(coverage.summary())
    metrics["n_gt_images"] = quality.n_images
    if quality.n_images:
        metrics.update({k: v for k, v in quality.summary().items() if k != "n_images"})
    return metrics
