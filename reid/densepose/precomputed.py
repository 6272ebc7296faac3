"""IUV computed elsewhere: a folder of IUV PNGs, or an ``apply_net.py dump`` file (SPEC §5).

PNG folder layout: for a crop ``<dataset>/<split folder>/<stem>.jpg`` the IUV is looked up at
``<root>/<split folder>/<stem><suffix>.png`` first, then ``<root>/<stem><suffix>.png`` (a flat
folder). The PNG holds I, U, V in channels 0, 1, 2 *as cv2 reads them* (DensePose's legacy
``*_IUV.png`` files and our gt_iuv exports; PIL would show I in channel 2), same size as its crop.
An all-background PNG means "no person found".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from reid.densepose.base import IUVResult
from reid.densepose.detectron2 import best_instance, int_box_xywh, paste_box
from reid.io import ImageReadError
from reid.parts import N_PARTS


def read_iuv_png(path: Path, image_hw: tuple[int, int]) -> np.ndarray:
    """IUV uint8 [H, W, 3] from a PNG (channels as cv2 reads them); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"IUV file not found: {path}")
    iuv = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if iuv is None:
        raise ImageReadError(f"unreadable IUV PNG: {path}")
    if iuv.dtype != np.uint8 or iuv.ndim != 3 or iuv.shape[2] != 3:
        raise ValueError(f"{path}: an IUV PNG must be 8-bit with 3 channels, got {iuv.dtype} {iuv.shape}")
    if iuv.shape[:2] != tuple(image_hw):
        raise ValueError(f"{path}: IUV size {iuv.shape[:2]} differs from its crop's {tuple(image_hw)}")
    if iuv[..., 0].max() > N_PARTS:
        raise ValueError(f"{path}: part index {int(iuv[..., 0].max())} > {N_PARTS} in channel 0")
    return iuv


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
    entries = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(entries, list) or any(not isinstance(e, dict) or "file_name" not in e for e in entries):
        raise ValueError(f"{path}: not an apply_net.py dump (expected a list of dicts with 'file_name')")
    return entries


def dump_entry_to_result(entry: dict[str, Any], image_hw: tuple[int, int], score_threshold: float) -> IUVResult:
    """IUVResult of the best-scoring person of one dump entry (scores, pred_boxes_XYXY, pred_densepose)."""
    scores = entry.get("scores")
    results = entry.get("pred_densepose")
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
