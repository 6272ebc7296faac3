"""IUV computed elsewhere: a folder of IUV PNGs, or an ``apply_net.py dump`` file (SPEC §5).

PNG folder layout: for a crop ``<dataset>/<split folder>/<stem>.jpg`` the IUV is looked up at
``<root>/<split folder>/<stem><suffix>.png`` first, then ``<root>/<stem><suffix>.png`` (a flat
folder). The PNG holds I, U, V in channels 0, 1, 2 *as cv2 reads them* (DensePose's legacy
``*_IUV.png`` files and our gt_iuv exports; PIL would show I in channel 2), same size as its crop.
An all-background PNG means "no person found".

Dump files: ``apply_net.py dump <config> <weights> <input> --output <file>`` with DensePose's chart
model; <input> a folder (not searched recursively; entries are keyed by '<folder>/<stem>') or a
quoted glob such as ``'market/*/*.jpg'`` for several folders in one file. Reading one needs
DensePose importable (the file pickles its classes). Checked on a real dump
(tests/test_densepose_detectron2_real.py): it gives the same IUV as the detectron2 backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reid.densepose.base import IUVResult, read_iuv_png  # re-exported: bench/ imports it from here
from reid.densepose.detectron2 import INSTALL_HINT, best_instance, int_box_xywh, paste_box


class PrecomputedPNGEstimator:
    """IUV PNGs from a folder, matched to crops by split folder and file stem."""

    def __init__(self, root: str | Path, suffix: str = "", on_missing: Literal["error", "not_found"] = "error"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"densepose.precomputed.root: folder not found: {self.root}")
        self.suffix = suffix
        self.on_missing = on_missing

    def candidates(self, crop: Path) -> list[Path]:
        name = f"{Path(crop).stem}{self.suffix}.png"
        return [self.root / Path(crop).parent.name / name, self.root / name]

    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[IUVResult]:
        results = []
        for image, crop in zip(images, paths, strict=True):
            found = next((p for p in self.candidates(crop) if p.is_file()), None)
            if found is None:
                if self.on_missing == "error":
                    tried = " or ".join(str(p) for p in self.candidates(crop))
                    raise FileNotFoundError(f"no precomputed IUV for {crop}: looked for {tried} "
                                            "(set densepose.precomputed.on_missing: not_found to flag such crops)")
                results.append(IUVResult(np.zeros(image.shape[:2] + (3,), np.uint8), False))
                continue
            iuv = read_iuv_png(found, image.shape[:2])
            results.append(IUVResult(iuv, bool(iuv[..., 0].any())))
        return results


def load_dump(path: str | Path, *, trust_dump: bool) -> list[dict[str, Any]]:
    """The entries of an ``apply_net.py dump`` file. TRUSTED INPUT ONLY.

    Such files are written with torch.save around DensePose classes, so reading them needs
    ``weights_only=False`` (full unpickling: a crafted file can run arbitrary code) and DensePose
    importable. This refuses unless the user states `trust_dump: true` for a file they made.
    """
    path = Path(path)
    if not trust_dump:
        raise ValueError(f"densepose.precomputed.dump: reading {path} unpickles arbitrary objects; set "
                              "densepose.precomputed.trust_dump: true only for a dump file you made yourself")
    if not path.is_file():
        raise FileNotFoundError(f"densepose.precomputed.dump: file not found: {path}")
    try:
        entries = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as err:  # unpickling a class of a module that is absent or older
        if isinstance(err, ModuleNotFoundError) or "densepose" in str(err):
            raise ImportError(f"densepose.precomputed.dump: reading {path} needs the DensePose classes it pickles "
                              f"({err}); {INSTALL_HINT}") from err
        raise
    if not isinstance(entries, list) or any(not isinstance(e, dict) or "file_name" not in e for e in entries):
        raise ValueError(f"{path}: not an apply_net.py dump (expected a list of dicts with 'file_name')")
    return entries


def dump_entry_to_result(entry: dict[str, Any], image_hw: tuple[int, int], score_threshold: float) -> IUVResult:
    """IUVResult of the best-scoring person of one dump entry (scores, pred_boxes_XYXY, pred_densepose).

    apply_net writes no 'pred_densepose' for an image without detections; a CSE model's dump holds one
    DensePoseEmbeddingPredictorOutput instead of a list of chart results, and is refused.
    """
    scores = entry.get("scores")
    results = entry.get("pred_densepose")
    if results is not None and not isinstance(results, (list, tuple)):
        raise ValueError(f"{entry['file_name']}: the dump holds {type(results).__name__}, not DensePose chart "
                         f"results (labels, uv): only chart models (IUV, e.g. densepose_rcnn_R_50_FPN_s1x) are "
                         f"supported, not CSE (embedding) models")
    if scores is None or results is None or len(results) == 0:
        return IUVResult(np.zeros((*image_hw, 3), np.uint8), False)
    best = best_instance(torch.as_tensor(scores), score_threshold)
    if best is None:
        return IUVResult(np.zeros((*image_hw, 3), np.uint8), False)
    x, y, _, _ = int_box_xywh(torch.as_tensor(entry["pred_boxes_XYXY"])[best])
    result = results[best]  # DensePoseChartResult(WithConfidences): labels [h, w], uv [2, h, w]
    labels = torch.as_tensor(result.labels).long()
    uv = torch.as_tensor(result.uv).float().clamp(0.0, 1.0) * (labels[None] > 0)
    box_iuv = torch.cat([labels[None].to(torch.uint8), (uv * 255.0).round().to(torch.uint8)]).permute(1, 2, 0)
    return IUVResult(paste_box(box_iuv, x, y, image_hw).numpy(), True)


class DumpEstimator:
    """IUV from an apply_net.py dump, matched to crops by '<parent folder>/<stem>' or, if unique, the stem."""

    def __init__(self, dump_path: str | Path, *, trust_dump: bool, score_threshold: float = 0.8):
        self.dump_path = Path(dump_path)
        self.score_threshold = score_threshold
        self.by_key: dict[str, dict[str, Any]] = {}
        self.by_stem: dict[str, list[dict[str, Any]]] = {}
        for entry in load_dump(dump_path, trust_dump=trust_dump):
            name = Path(entry["file_name"])
            self.by_key[f"{name.parent.name}/{name.stem}"] = entry
            self.by_stem.setdefault(name.stem, []).append(entry)

    def entry_for(self, crop: Path) -> dict[str, Any]:
        crop = Path(crop)
        entry = self.by_key.get(f"{crop.parent.name}/{crop.stem}")
        if entry is not None:
            return entry
        matches = self.by_stem.get(crop.stem, [])
        if len(matches) != 1:
            why = "no entry" if not matches else f"{len(matches)} entries in different folders"
            raise KeyError(f"{self.dump_path}: {why} for crop {crop} (matched by file stem)")
        return matches[0]

    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[IUVResult]:
        return [dump_entry_to_result(self.entry_for(p), im.shape[:2], self.score_threshold)
                for im, p in zip(images, paths, strict=True)]
