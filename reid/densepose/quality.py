"""How good an IUV estimate is: part mIoU, UV error, detection coverage (SPEC §5).

Definitions (shared by every backend's metrics file):

* ``part_miou`` — mean IoU over the 25 classes (24 parts + background), from pixel counts pooled
  over all images; ``part_miou_fg`` — the same over the 24 body parts only (the number to compare
  backends by: background dominates a crop and inflates the 25-class mean). A class absent from
  both ground truth and prediction is left out of the mean.
* ``u_error`` / ``v_error`` — mean |dU|, |dV| (U, V in [0, 1]) over foreground pixels whose part is
  predicted correctly; ``uv_error`` is their mean.
* ``found_fraction`` — share of crops where the backend found a person; ``body_pixel_fraction`` —
  mean over crops of the share of foreground pixels (0 for crops without a person).
"""

from __future__ import annotations

import numpy as np

from reid.parts import N_CLASSES, N_PARTS, decode_iuv


def part_confusion(pred_parts: np.ndarray, gt_parts: np.ndarray) -> np.ndarray:
    """[25, 25] int64 pixel counts, rows = ground-truth part, columns = predicted part."""
    if pred_parts.shape != gt_parts.shape:
        raise ValueError(f"part maps differ in shape: predicted {pred_parts.shape}, ground truth {gt_parts.shape}")
    flat = gt_parts.astype(np.int64).ravel() * N_CLASSES + pred_parts.astype(np.int64).ravel()
    return np.bincount(flat, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES)


def part_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class from a confusion matrix (NaN where a class is in neither ground truth nor prediction)."""
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


class IUVQuality:
    """Accumulates predicted-vs-ground-truth IUV statistics image by image."""

    def __init__(self) -> None:
        self.confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
        self.abs_sum = np.zeros(2, dtype=np.float64)
        self.n_correct = 0
        self.n_images = 0

    def update(self, pred_iuv: np.ndarray, gt_iuv: np.ndarray) -> None:
        if pred_iuv.shape != gt_iuv.shape:
            raise ValueError(f"predicted IUV {pred_iuv.shape} and ground truth {gt_iuv.shape} differ in shape")
        p_parts, p_u, p_v = decode_iuv(pred_iuv)
        g_parts, g_u, g_v = decode_iuv(gt_iuv)
        self.confusion += part_confusion(p_parts, g_parts)
        ok = (p_parts == g_parts) & (g_parts > 0)
        self.abs_sum += [np.abs(p_u[ok] - g_u[ok]).sum(dtype=np.float64), np.abs(p_v[ok] - g_v[ok]).sum(dtype=np.float64)]
        self.n_correct += int(ok.sum())
        self.n_images += 1

    def summary(self) -> dict[str, float | int]:
        iou = part_iou(self.confusion)
        u_err, v_err = self.abs_sum / max(self.n_correct, 1)
        fg = iou[1:]
        return {
            "part_miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "part_miou_fg": float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan"),
            "background_iou": float(iou[0]),
            "u_error": float(u_err), "v_error": float(v_err), "uv_error": float((u_err + v_err) / 2),
            "n_images": self.n_images, "n_correct_fg_pixels": self.n_correct,
            "n_parts_seen": int(np.isfinite(fg).sum()), "n_parts": N_PARTS,
        }


class CoverageStats:
    """Detection coverage: share of crops with a person, mean body-pixel fraction."""

    def __init__(self) -> None:
        self.n_images = 0
        self.n_found = 0
        self.body_fraction_sum = 0.0

    def update(self, iuv: np.ndarray, found: bool) -> None:
        self.n_images += 1
        self.n_found += int(found)
        self.body_fraction_sum += float(np.count_nonzero(iuv[..., 0])) / max(iuv.shape[0] * iuv.shape[1], 1)

    def summary(self) -> dict[str, float | int]:
        n = max(self.n_images, 1)
        return {"n_images": self.n_images, "n_found": self.n_found,
                "found_fraction": self.n_found / n, "body_pixel_fraction": self.body_fraction_sum / n}


# --- floors below which the regulators' inputs carry next to nothing -------------------------------
# Stated against the synthetic world: its ground-truth IUVs give body pixels 23.5 % of a crop and 19.4 of the
# 24 parts seen per crop (S-independent; coverage shrinks as S grows); the default lite DensePose scores part
# mIoU 0.64 on its test identities. A value far below means the DSAG-Stream / SAN-PG see mostly noise: the
# pipeline still runs (a finding, not an error), and says so in the stage output and in summary.md.
QUALITY_FLOORS = {"found_fraction": 0.5, "body_pixel_fraction": 0.05, "part_miou": 0.25, "mean_parts_seen": 8.0}


# (figure, the stage metrics holding it, what it says, how its floor reads)
QUALITY_FIGURES = (
    ("found_fraction", "densepose", "DensePose found a person in {:.1%} of crops", "{:.0%}"),
    ("body_pixel_fraction", "densepose", "DensePose labels {:.1%} of a crop's pixels as body", "{:.0%}"),
    ("part_miou", "densepose", "DensePose part mIoU is {:.3f}", "{:.2f}"),
    ("mean_parts_seen", "dsap", "the DSAP images hold {:.1f} of the 24 parts per crop", "{:.0f}"),
)


def quality_warnings(densepose: dict | None = None, dsap: dict | None = None) -> list[str]:
    """One sentence per IUV / DSAP quality figure below its floor (QUALITY_FLOORS), from the densepose
    stage's metrics (part mIoU exists only where ground truth scored it) and the dsap stage's."""
    metrics = {"densepose": densepose or {}, "dsap": dsap or {}}
    warnings = []
    for key, stage, says, floor in QUALITY_FIGURES:
        value = metrics[stage].get(key)
        if value is not None and value < QUALITY_FLOORS[key]:
            warnings.append(f"{says.format(value)} (floor {floor.format(QUALITY_FLOORS[key])}): the regulators' "
                            "dense semantics are mostly noise here")
    return warnings
