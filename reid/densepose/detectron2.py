"""Real DensePose (detectron2, R50-FPN chart model) as an IUV backend (SPEC §5).

detectron2 and DensePose are imported only when this backend is built. They are not on PyPI;
install them after torch, without build isolation (their setup.py imports torch)::

    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'
    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git#subdirectory=projects/DensePose'

and download, by hand, the config ``densepose_rcnn_R_50_FPN_s1x.yaml`` (with its ``Base-*.yaml``)
and the weights ``model_final_162be9.pkl`` from the DensePose model zoo. Nothing is downloaded at
run time. (CPU-only torch builds fall back to a CPU extension; CUDA is used when present.)
From a source checkout (as tested: torch 2.14.1, pip 23.2, setuptools 84), editable installs need
``--use-pep517`` too (else ``setup.py develop`` re-runs pip *with* isolation, where torch is
missing), and DensePose ``--no-deps`` (its setup.py asks for detectron2 from git again)::

    FORCE_CUDA=0 pip install --no-build-isolation --use-pep517 --no-deps -e detectron2
    pip install --no-build-isolation --use-pep517 --no-deps -e detectron2/projects/DensePose

The conversion of a chart predictor output to a crop-sized IUV image is ours, in plain torch,
and reproduces DensePose's (``densepose/converters/chart_output_to_chart_result.py``,
``segm_to_mask.py``, ``base.make_int_box``):

* box XYXY -> XYWH in float, then each of x, y, w, h truncated to int (``Tensor.long()``),
  w and h at least 1;
* coarse and fine segmentation resized bilinearly (align_corners=False) to (h, w) and argmaxed;
  labels = fine * (coarse > 0);
* U and V resized the same way and read from each pixel's label channel (0 on background);
* pasted at ``canvas[y:y+h, x:x+w]``, clipped at the crop border.

One deliberate difference: U, V are clamped to [0, 1] and *rounded* to bytes (SPEC §2 IUV
convention, as reid.parts.encode_iuv); DensePose's own quantisation truncates (``.byte()``),
so bytes can differ by one.

Checked against detectron2 itself (tests/test_densepose_detectron2_real.py, run where detectron2 and
DensePose are installed): on the real R50-FPN chart model (random weights) the IUV equals DensePose's
own converter, rounded, on every instance, and equals what ``apply_net.py dump`` gives read by the
precomputed backend.

Only chart models (IUV) are supported: a CSE model (``DensePoseEmbeddingPredictorOutput``: embeddings,
no I/U/V) is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reid.config import ConfigError
from reid.densepose.base import IUVResult

INSTALL_HINT = (
    "the detectron2 DensePose backend needs detectron2 and DensePose, which are not on PyPI: "
    "install torch first, then `pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git'` and `pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git#subdirectory=projects/DensePose'`"
)


CONFIG_SUFFIXES = (".yaml", ".yml")


def check_config_file(config_path: str | Path) -> None:
    """Refuse a config detectron2 would execute: only YAML, which is read with allow_unsafe=False."""
    if Path(config_path).suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(f"densepose.detectron2.config: {config_path} is not a .yaml/.yml file "
                          f"(detectron2 runs a .py config as code)")


def check_weights_trusted(weights_path: str | Path, trust_weights: bool) -> None:
    """Refuse detectron2 weights the user has not vouched for: every format detectron2 reads unpickles."""
    if trust_weights:
        return
    how = "pickle.load" if Path(weights_path).suffix.lower() == ".pkl" else "torch.load without weights_only"
    raise ConfigError(f"densepose.detectron2.weights: detectron2 reads {weights_path} with {how}, which can run "
                      f"code from a crafted file; set densepose.detectron2.trust_weights: true only after "
                      f"checking where the file comes from (e.g. the DensePose model zoo, by checksum)")


def int_box_xywh(box_xyxy: torch.Tensor) -> tuple[int, int, int, int]:
    """DensePose's integer box: XYXY -> XYWH in the box's float dtype, truncated; w, h >= 1."""
    xywh = box_xyxy.detach().clone().reshape(4)
    xywh[2:] -= xywh[:2]
    x, y, w, h = xywh.long().tolist()
    return x, y, max(w, 1), max(h, 1)


def chart_to_box_iuv(
    coarse_segm: torch.Tensor, fine_segm: torch.Tensor, u: torch.Tensor, v: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """uint8 [h, w, 3] IUV of one instance from its chart outputs [2|K, S, S], [25, S, S] x3."""
    def resize(t: torch.Tensor) -> torch.Tensor:
        t = t if t.is_floating_point() else t.float()
        return F.interpolate(t[None], (h, w), mode="bilinear", align_corners=False)[0]

    coarse = resize(coarse_segm).argmax(dim=0)
    labels = resize(fine_segm).argmax(dim=0) * (coarse > 0).long()
    uv = torch.stack([resize(u).gather(0, labels[None])[0], resize(v).gather(0, labels[None])[0]])
    uv = torch.where(labels[None] > 0, uv.clamp(0.0, 1.0), torch.zeros_like(uv))
    return torch.cat([labels[None].to(torch.uint8), (uv * 255.0).round().to(torch.uint8)]).permute(1, 2, 0)


def paste_box(box_iuv: torch.Tensor, x: int, y: int, image_hw: tuple[int, int]) -> torch.Tensor:
    """A crop-sized uint8 [H, W, 3] canvas (background 0) with `box_iuv` at (x, y), clipped at the border."""
    height, width = image_hw
    canvas = torch.zeros((height, width, 3), dtype=torch.uint8, device=box_iuv.device)
    h, w = box_iuv.shape[:2]
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, height), min(x + w, width)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = box_iuv[y0 - y:y1 - y, x0 - x:x1 - x]
    return canvas


def chart_output_to_iuv(
    coarse_segm: torch.Tensor, fine_segm: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
    box_xyxy: torch.Tensor, image_hw: tuple[int, int],
) -> torch.Tensor:
    """Crop-sized uint8 [H, W, 3] IUV of one instance (chart outputs [C, S, S], its box in XYXY pixels)."""
    x, y, w, h = int_box_xywh(box_xyxy)
    return paste_box(chart_to_box_iuv(coarse_segm, fine_segm, u, v, h, w), x, y, image_hw)


def best_instance(scores: torch.Tensor, score_threshold: float) -> int | None:
    """Index of the highest-scoring instance with score >= threshold (first on ties), or None."""
    if scores.numel() == 0:
        return None
    best = int(torch.argmax(scores))
    return best if float(scores[best]) >= score_threshold else None


CHART_FIELDS = ("coarse_segm", "fine_segm", "u", "v")


def check_chart_output(output: Any, where: str) -> None:
    """Refuse a DensePose output that is not a chart (IUV) one, e.g. a CSE model's embeddings."""
    missing = [name for name in CHART_FIELDS if getattr(output, name, None) is None]
    if missing:
        raise ValueError(f"{where}: {type(output).__name__} has no {', '.join(missing)}: only DensePose chart models "
                         f"(IUV, e.g. densepose_rcnn_R_50_FPN_s1x) are supported, not CSE (embedding) models")


def instances_to_result(instances: Any, image_hw: tuple[int, int], score_threshold: float) -> IUVResult:
    """IUVResult of the best person in detectron2 `Instances` (scores, pred_boxes, pred_densepose).

    The best person is the highest-scoring instance (the first on ties; detectron2 returns them by
    decreasing score). No instance (detectron2 then sets no ``pred_densepose`` when the whole batch
    has none) or none above `score_threshold`: background and ``found`` False.
    """
    best = best_instance(instances.scores, score_threshold)
    if best is None:
        return IUVResult(np.zeros((*image_hw, 3), np.uint8), False)
    dp = instances.pred_densepose
    check_chart_output(dp, "detectron2 pred_densepose")
    iuv = chart_output_to_iuv(dp.coarse_segm[best], dp.fine_segm[best], dp.u[best], dp.v[best],
                              instances.pred_boxes.tensor[best], image_hw)
    return IUVResult(iuv.cpu().numpy(), True)


class Detectron2Estimator:
    """DensePose R-CNN through detectron2's DefaultPredictor, run on batches of crops."""

    def __init__(self, config_path: str | Path, weights_path: str | Path, device: torch.device,
                 score_threshold: float = 0.8, batch_size: int = 8, *, trust_weights: bool = False):
        for name, path in (("densepose.detectron2.config", config_path), ("densepose.detectron2.weights", weights_path)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{name}: file not found: {path}")
        # Before importing detectron2: nothing of it may touch an untrusted file.
        check_config_file(config_path)
        check_weights_trusted(weights_path, trust_weights)
        try:
            from densepose import add_densepose_config
            from detectron2.config import get_cfg
            from detectron2.engine import DefaultPredictor
        except ImportError as err:
            raise ImportError(f"{INSTALL_HINT} ({err})") from err
        cfg = get_cfg()
        add_densepose_config(cfg)
        cfg.merge_from_file(str(config_path), allow_unsafe=False)  # its default falls back to yaml.unsafe_load
        cfg.MODEL.WEIGHTS = str(weights_path)
        cfg.MODEL.DEVICE = str(device)  # detectron2 defaults to "cuda", which fails on CPU torch
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
        cfg.freeze()
        self.predictor = DefaultPredictor(cfg)
        self.device = device
        self.score_threshold = score_threshold
        self.batch_size = batch_size

    def predict(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[IUVResult]:
        # One model call pads its images to the largest of them, and the padding changes the others'
        # features, so a crop's detections would depend on which crops share its batch (seen on the
        # real model: a 160x64 crop found a person beside 128x64 and 100x50 crops, none alone). Only
        # crops of one size go into a call: padded alike, they give what one crop at a time gives
        # (DefaultPredictor, apply_net.py). Results come back in input order.
        results: dict[int, IUVResult] = {}
        by_size: dict[tuple[int, ...], list[int]] = {}
        for k, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(k)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                outputs = self._forward([np.ascontiguousarray(images[k][..., ::-1]) for k in chunk])  # model wants BGR
                for k, out in zip(chunk, outputs, strict=True):
                    results[k] = instances_to_result(out["instances"], images[k].shape[:2], self.score_threshold)
        return [results[k] for k in range(len(images))]

    @torch.no_grad()
    def _forward(self, bgr_images: list[np.ndarray]) -> list[dict]:
        # DefaultPredictor.__call__ for a list: same test-time resize and input format, one model call.
        p = self.predictor
        inputs = []
        for bgr in bgr_images:
            image = bgr[:, :, ::-1] if p.input_format == "RGB" else bgr
            h, w = image.shape[:2]
            tensor = torch.as_tensor(p.aug.get_transform(image).apply_image(image).astype("float32").transpose(2, 0, 1))
            inputs.append({"image": tensor.to(self.device), "height": h, "width": w})
        return p.model(inputs)
