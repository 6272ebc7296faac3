"""The detectron2 and precomputed (apply_net dump) backends against detectron2 and DensePose themselves.

Runs only where both are importable and DensePose's source folder (``projects/DensePose``: configs/,
apply_net.py) is found beside the installed package or at $REID_DENSEPOSE_SOURCE; skipped otherwise
(detectron2 is an optional extra, not on PyPI). Nothing is downloaded: the real
``densepose_rcnn_R_50_FPN_s1x.yaml`` architecture is built with seeded random weights and saved to a
.pth file that both our backend and apply_net load. Three layers are scaled down so random weights
give usable outputs (otherwise the un-normalised random ResNet makes logits and U/V of size ~1e3:
saturated scores, degenerate boxes, U/V always clamped): the box classifier (scores ~0.9, all
distinct), the RPN and box regressors (boxes near the anchors) and the U/V layers (U/V in and around
[0, 1]). The test config only lowers the test-time resize and the detections per image, for speed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

detectron2 = pytest.importorskip("detectron2")
densepose = pytest.importorskip("densepose")

from densepose import add_densepose_config  # noqa: E402
from densepose.converters import ToChartResultConverter  # noqa: E402
from densepose.modeling.predictors import DensePoseChartPredictor  # noqa: E402
from densepose.structures import (  # noqa: E402
    DensePoseChartPredictorOutput,
    DensePoseChartResultWithConfidences,
    DensePoseEmbeddingPredictorOutput,
    quantize_densepose_chart_result,
)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from reid.densepose import detectron2 as d2  # noqa: E402
from reid.densepose.precomputed import DumpEstimator, dump_entry_to_result  # noqa: E402
from reid.io import read_image, write_image  # noqa: E402
from reid.parts import N_PARTS, atlas_shape  # noqa: E402
from reid.synth.render import render_person  # noqa: E402

pytestmark = pytest.mark.slow

SOURCE = Path(os.environ.get("REID_DENSEPOSE_SOURCE") or Path(densepose.__file__).resolve().parents[1])
CONFIG = SOURCE / "configs" / "densepose_rcnn_R_50_FPN_s1x.yaml"
APPLY_NET = SOURCE / "apply_net.py"
if not (CONFIG.is_file() and APPLY_NET.is_file()):
    pytest.skip(f"DensePose source folder (configs/, apply_net.py) not found at {SOURCE}: "
                "set REID_DENSEPOSE_SOURCE to detectron2's projects/DensePose", allow_module_level=True)

CROP_HW = (128, 64)
ODD_HW = (160, 64)  # a crop of another size, to check batching


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2real")
    config = root / "densepose_test.yaml"  # the real architecture; smaller test-time input, fewer detections
    config.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  DEVICE: cpu\nTEST:\n  DETECTIONS_PER_IMAGE: 4\n"
                      "INPUT:\n  MIN_SIZE_TEST: 192\n  MAX_SIZE_TEST: 384\n")
    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.merge_from_file(str(config), allow_unsafe=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg)
    heads = model.roi_heads
    with torch.no_grad():
        heads.box_predictor.cls_score.weight.mul_(1e-3)
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([2.0, 0.0]))  # (person, background)
        heads.box_predictor.bbox_pred.weight.mul_(1e-3)
        model.proposal_generator.rpn_head.anchor_deltas.weight.mul_(1e-3)
        heads.densepose_predictor.u_lowres.weight.mul_(1e-4)
        heads.densepose_predictor.v_lowres.weight.mul_(1e-4)
    weights = root / "random_densepose_r50.pth"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"model": state}, weights)

    crops = root / "query"
    crops.mkdir()
    rng = np.random.default_rng(0)
    atlas = rng.integers(0, 256, atlas_shape(8), dtype=np.uint8)
    paths = []
    for k, size in enumerate([CROP_HW, CROP_HW, CROP_HW, ODD_HW]):
        path = crops / f"{k + 1:04d}_c1s1_{k:06d}_00.png"
        write_image(path, render_person(atlas, size=size, seed=k)[0])
        paths.append(path)
    images = [read_image(p) for p in paths]
    est = d2.Detectron2Estimator(config, weights, torch.device("cpu"), score_threshold=0.0, batch_size=8,
                                 trust_weights=True)
    same = images[:3]
    raw = est._forward([np.ascontiguousarray(im[..., ::-1]) for im in same])  # one batch, as predict sends it
    return {"root": root, "config": config, "weights": weights, "state": state, "paths": paths, "images": images,
            "est": est, "raw": [out["instances"] for out in raw], "results": est.predict(images, paths)}


def apply_net_dump(args: list[str]) -> None:
    """apply_net.py's own command line, run in this process (its parser, DumpAction.execute)."""
    spec = importlib.util.spec_from_file_location("densepose_apply_net", APPLY_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = module.create_argument_parser().parse_args(args)
    parsed.func(parsed)


def test_backend_builds_the_real_architecture_with_our_weights(world):
    model = world["est"].predictor.model
    assert type(model).__name__ == "GeneralizedRCNN"
    assert type(model.roi_heads).__name__ == "DensePoseROIHeads"
    assert isinstance(model.roi_heads.densepose_predictor, DensePoseChartPredictor)  # its WithConfidence subclass
    loaded = model.state_dict()
    for name in ("backbone.bottom_up.res2.0.conv1.weight", "roi_heads.densepose_predictor.u_lowres.weight"):
        assert torch.equal(loaded[name], world["state"][name])  # DefaultPredictor read our file, not another


def test_real_outputs_shapes_scores_and_boxes(world):
    height, width = CROP_HW
    for inst in world["raw"]:
        assert isinstance(inst, Instances) and inst.image_size == CROP_HW
        n = len(inst)
        assert 1 <= n <= 4
        dp = inst.pred_densepose
        assert isinstance(dp, DensePoseChartPredictorOutput)
        s = dp.coarse_segm.shape[-1]
        assert dp.coarse_segm.shape == (n, 2, s, s) and s == 112  # ROI_DENSEPOSE_HEAD.HEATMAP_SIZE
        assert dp.fine_segm.shape == dp.u.shape == dp.v.shape == (n, N_PARTS + 1, s, s)
        assert bool((inst.scores[:-1] >= inst.scores[1:]).all()) and 0 < float(inst.scores.min())
        assert set(inst.pred_classes.tolist()) == {0}
        box = inst.pred_boxes.tensor
        assert box.shape == (n, 4)  # XYXY in the crop's pixels, clipped to it (detector_postprocess)
        assert bool((box[:, 0] >= 0).all() and (box[:, 1] >= 0).all())
        assert bool((box[:, 2] <= width).all() and (box[:, 3] <= height).all())
        assert bool((box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all())


def test_conversion_equals_densepose_converter_on_every_instance(world):
    n_mid = 0
    for inst, image in zip(world["raw"], world["images"], strict=False):
        for i in range(len(inst)):
            dp = inst.pred_densepose
            ours = d2.chart_output_to_iuv(dp.coarse_segm[i], dp.fine_segm[i], dp.u[i], dp.v[i],
                                          inst.pred_boxes.tensor[i], image.shape[:2])
            theirs = ToChartResultConverter.convert(dp[i], inst.pred_boxes[[i]])
            x, y, w, h = d2.int_box_xywh(inst.pred_boxes.tensor[i])
            assert tuple(theirs.labels.shape) == (h, w)
            rounded = torch.cat([theirs.labels[None].to(torch.uint8),
                                 (theirs.uv.clamp(0, 1) * 255).round().to(torch.uint8)]).permute(1, 2, 0)
            np.testing.assert_array_equal(ours.numpy(), d2.paste_box(rounded, x, y, image.shape[:2]).numpy())
            truncated = quantize_densepose_chart_result(theirs).labels_uv_uint8.permute(1, 2, 0)
            truncated = d2.paste_box(truncated, x, y, image.shape[:2])
            assert int((ours.int() - truncated.int()).abs().max()) <= 1  # DensePose truncates, we round
            iuv = ours.numpy()
            assert iuv[..., 0].max() <= N_PARTS and not iuv[iuv[..., 0] == 0].any()  # background is (0, 0, 0)
            n_mid += int(((iuv[..., 1] > 0) & (iuv[..., 1] < 255)).sum())
    assert n_mid > 0  # some U strictly inside (0, 255): the rounding was exercised


def test_backend_takes_the_highest_scoring_instance(world):
    for inst, result in zip(world["raw"], world["results"], strict=False):  # the three same-size crops
        assert result.found and result.iuv.shape == (*CROP_HW, 3) and result.iuv.dtype == np.uint8
        best = int(torch.argmax(inst.scores))
        dp = inst.pred_densepose
        expect = d2.chart_output_to_iuv(dp.coarse_segm[best], dp.fine_segm[best], dp.u[best], dp.v[best],
                                        inst.pred_boxes.tensor[best], CROP_HW).numpy()
        np.testing.assert_array_equal(result.iuv, expect)
        x, y, w, h = d2.int_box_xywh(inst.pred_boxes.tensor[best])
        outside = result.iuv.copy()
        outside[max(y, 0):y + h, max(x, 0):x + w] = 0
        assert not outside.any() and result.iuv[..., 0].any()
        # Reverse the scores on the real Instances: the last instance now wins.
        flipped = Instances(inst.image_size, **inst.get_fields())
        flipped.scores = inst.scores.flip(0)
        last = len(inst) - 1
        expect = d2.chart_output_to_iuv(dp.coarse_segm[last], dp.fine_segm[last], dp.u[last], dp.v[last],
                                        inst.pred_boxes.tensor[last], CROP_HW).numpy()
        np.testing.assert_array_equal(d2.instances_to_result(flipped, CROP_HW, 0.0).iuv, expect)


def test_no_detection_is_background_and_not_found(world):
    # detectron2 keeps scores > SCORE_THRESH_TEST: at 1.0 nothing, and then no pred_densepose at all.
    est = d2.Detectron2Estimator(world["config"], world["weights"], torch.device("cpu"), score_threshold=1.0,
                                 trust_weights=True)
    image = world["images"][0]
    (out,) = est._forward([np.ascontiguousarray(image[..., ::-1])])
    assert len(out["instances"]) == 0 and not out["instances"].has("pred_densepose")
    (result,) = est.predict([image], world["paths"][:1])
    assert not result.found and result.iuv.shape == (*CROP_HW, 3) and not result.iuv.any()


def test_batching_does_not_change_any_crop(world):
    est = world["est"]
    est.batch_size = 1
    try:
        one_at_a_time = est.predict(world["images"], world["paths"])
    finally:
        est.batch_size = 8
    assert world["results"][3].iuv.shape == (*ODD_HW, 3)
    for batched, single in zip(world["results"], one_at_a_time, strict=True):
        assert batched.found == single.found
        np.testing.assert_array_equal(batched.iuv, single.iuv)


def test_real_apply_net_dump_reads_back_to_the_same_iuv(world):
    dump = world["root"] / "dump.pkl"
    apply_net_dump(["dump", str(world["config"]), str(world["weights"]), str(world["root"] / "query"),
                    "--output", str(dump), "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    entries = torch.load(dump, map_location="cpu", weights_only=False)
    assert sorted(Path(e["file_name"]).name for e in entries) == sorted(p.name for p in world["paths"])
    for entry in entries:
        assert set(entry) == {"file_name", "scores", "pred_boxes_XYXY", "pred_densepose"}
        assert all(isinstance(r, DensePoseChartResultWithConfidences) for r in entry["pred_densepose"])
    results = DumpEstimator(dump, trust_dump=True, score_threshold=0.0).predict(world["images"], world["paths"])
    for from_dump, from_backend in zip(results, world["results"], strict=True):
        assert from_dump.found and from_backend.found
        np.testing.assert_array_equal(from_dump.iuv, from_backend.iuv)

    empty = world["root"] / "empty.pkl"  # one file, nothing detected: apply_net writes no pred_densepose
    apply_net_dump(["dump", str(world["config"]), str(world["weights"]), str(world["paths"][0]),
                    "--output", str(empty), "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0"])
    (entry,) = torch.load(empty, map_location="cpu", weights_only=False)
    assert "pred_densepose" not in entry and len(entry["scores"]) == 0
    (result,) = DumpEstimator(empty, trust_dump=True).predict(world["images"][:1], world["paths"][:1])
    assert not result.found and not result.iuv.any()


def test_cse_outputs_are_refused(world):
    inst = Instances(CROP_HW, scores=torch.tensor([0.9]), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 30.0, 60.0]])),
                     pred_densepose=DensePoseEmbeddingPredictorOutput(embedding=torch.zeros(1, 16, 112, 112),
                                                                      coarse_segm=torch.zeros(1, 2, 112, 112)))
    with pytest.raises(ValueError, match="DensePoseEmbeddingPredictorOutput has no fine_segm"):
        d2.instances_to_result(inst, CROP_HW, 0.5)
    entry = {"file_name": "query/x.png", "scores": inst.scores, "pred_boxes_XYXY": inst.pred_boxes.tensor,
             "pred_densepose": inst.pred_densepose}  # what apply_net's dump writes for a CSE model
    with pytest.raises(ValueError, match="holds DensePoseEmbeddingPredictorOutput"):
        dump_entry_to_result(entry, CROP_HW, 0.5)
