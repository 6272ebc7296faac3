"""The synthetic world's ground-truth IUV as a backend: for ablations (DSA gain vs IUV quality).

The Market-layout export keeps each crop's exact IUV beside the split folders:
``<world>/<split folder>/<stem>.jpg`` -> ``<world>/gt_iuv/<split folder>/<stem>.png``
(I, U, V in channels 0, 1, 2 as cv2 reads them). The same lookup tells the densepose stage
where ground truth exists to score any backend against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reid.densepose.base import IUVResult, read_iuv_png


def gt_iuv_path(crop: str | Path) -> Path:
    """Where the synthetic world stores the ground-truth IUV of `crop`."""
    crop = Path(crop)
    return crop.parent.parent / "gt_iuv" / crop.parent.name / f"{crop.stem}.png"


class OracleEstimator:
    """Ground-truth IUV of synthetic crops; a crop without a gt_iuv file is an error."""

    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[IUVResult]:
        results = []
        for image, crop in zip(images, paths, strict=True):
            path = gt_iuv_path(crop)
            if not path.is_file():
                raise FileNotFoundError(f"oracle backend: no ground-truth IUV for {crop} (expected {path}); "
                                        "the oracle works on the synthetic world only")
            iuv = read_iuv_png(path, image.shape[:2])
            results.append(IUVResult(iuv, bool(iuv[..., 0].any())))
        return results
