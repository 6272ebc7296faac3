"""The one interface every IUV backend implements (detectron2, precomputed, lite, oracle)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class IUVResult:
    """IUV (uint8 [H, W, 3], same size as its crop) and whether a person was found."""

    iuv: np.ndarray
    found: bool


class IUVEstimator(Protocol):
    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[IUVResult]:
        """IUV for each RGB uint8 crop; `paths` are the crops' files (precomputed/oracle look up by them)."""
        ...
