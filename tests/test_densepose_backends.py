import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from reid.config import ConfigError, from_mapping
from reid.data.manifest import SCHEMA, write_manifest
from reid.densepose import detectron2 as d2
from reid.densepose.build import DensePoseConfig, build_estimator, run_densepose
from reid.densepose.oracle import OracleEstimator, gt_iuv_path
from reid.densepose.precomputed import DumpEstimator, PrecomputedPNGEstimator
from reid.io import decode_raw, encode_raw, write_bytes_atomic, write_image
from reid.parts import N_PARTS, atlas_shape


def render_person(*args, **kwargs):
    try:
        from reid.synth import render_person as render
    except ImportError:  # before reid.synth exports it from its __init__
        from reid.synth.render import render_person as render
    return render(*args, **kwargs)


# --- detectron2 conversion vs a per-pixel reference ------------------------------------------------

def bilinear_pixel(maps: np.ndarray, i: int, j: int, h: int, w: int) -> np.ndarray:
    """Value of every channel of maps [C, S, S] at output pixel (i, j) of a (h, w) resize,
    align_corners=False: source = (dst + 0.5) * scale - 0.5, clamped at 0, edge-replicated."""
    size_y, size_x = maps.shape[1:]
    def coords(dst, n_out, n_in):
        src = max((dst + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(np.floor(src)), n_in - 1)
        return lo, min(lo + 1, n_in - 1), src - lo
    y0, y1, ly = coords(i, h, size_y)
    x0, x1, lx = coords(j, w, size_x)
    return ((1 - ly) * ((1 - lx) * maps[:, y0, x0] + lx * maps[:, y0, x1])
            + ly * ((1 - lx) * maps[:, y1, x0] + lx * maps[:, y1, x1]))


def reference_iuv(coarse, fine, u, v, box_xyxy, image_hw):
    x0, y0, x1, y1 = (np.float32(c) for c in box_xyxy)
    x, y = int(x0), int(y0)                                     # truncation toward zero
    w, h = max(int(x1 - x0), 1), max(int(y1 - y0), 1)          # float32 difference, then truncation
    out = np.zeros((*image_hw, 3), np.uint8)
    for r in range(image_hw[0]):
        for c in range(image_hw[1]):
            i, j = r - y, c - x
            if not (0 <= i < h and 0 <= j < w):
                continue
            label = int(np.argmax(bilinear_pixel(fine, i, j, h, w)))
            if np.argmax(bilinear_pixel(coarse, i, j, h, w)) == 0:
                label = 0
            if label:
                uu = min(max(bilinear_pixel(u, i, j, h, w)[label], 0.0), 1.0)
                vv = min(max(bilinear_pixel(v, i, j, h, w)[label], 0.0), 1.0)
                out[r, c] = (label, round(uu * 255), round(vv * 255))
    return out


def predictor_tensors(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 2, 112, 112, generator=g, dtype=torch.float64)
    coarse[:, 1] += 0.5  # mostly foreground, but not everywhere
    fine = torch.randn(n, 25, 112, 112, generator=g, dtype=torch.float64)
    u = torch.rand(n, 25, 112, 112, generator=g, dtype=torch.float64) * 1.2 - 0.1  # raw: beyond [0, 1] too
    v = torch.rand(n, 25, 112, 112, generator=g, dtype=torch.float64) * 1.2 - 0.1
    return coarse, fine, u, v


@pytest.mark.parametrize("box", [(10.7, 5.3, 50.2, 120.9), (40.5, -3.2, 80.9, 60.0), (3.0, 4.0, 3.4, 4.2)])
def test_chart_output_to_iuv_matches_per_pixel_reference(box):
    coarse, fine, u, v = predictor_tensors(2)
    image_hw = (128, 64)
    box_t = torch.tensor(box, dtype=torch.float32)
    got = d2.chart_output_to_iuv(coarse[1], fine[1], u[1], v[1], box_t, image_hw).numpy()
    ref = reference_iuv(coarse[1].numpy(), fine[1].numpy(), u[1].numpy(), v[1].numpy(), box, image_hw)
    assert got.dtype == np.uint8 and got.shape == (128, 64, 3)
    np.testing.assert_array_equal(got, ref)
    assert got[..., 0].max() <= N_PARTS


def test_int_box_truncates_like_densepose():
    assert d2.int_box_xywh(torch.tensor([10.7, 5.3, 50.2, 120.9])) == (10, 5, 39, 115)
    assert d2.int_box_xywh(torch.tensor([-2.5, 0.0, 0.4, 0.9])) == (-2, 0, 2, 1)  # w, h >= 1


def fake_instances(scores, boxes, seed=0):
    n = len(scores)
    coarse, fine, u, v = predictor_tensors(max(n, 1), seed)
    dp = SimpleNamespace(coarse_segm=coarse[:n].float(), fine_segm=fine[:n].float(), u=u[:n].float(), v=v[:n].float())
    return SimpleNamespace(scores=torch.tensor(scores, dtype=torch.float32),
                           pred_boxes=SimpleNamespace(tensor=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4)),
                           pred_densepose=dp)


def test_instances_pick_highest_scoring_person_above_threshold():
    boxes = [(0, 0, 20, 40), (30, 50, 60, 120), (5, 5, 10, 10)]
    inst = fake_instances([0.9, 0.95, 0.3], boxes)
    result = d2.instances_to_result(inst, (128, 64), 0.8)
    assert result.found
    expect = d2.chart_output_to_iuv(inst.pred_densepose.coarse_segm[1], inst.pred_densepose.fine_segm[1],
                                    inst.pred_densepose.u[1], inst.pred_densepose.v[1],
                                    inst.pred_boxes.tensor[1], (128, 64)).numpy()
    np.testing.assert_array_equal(result.iuv, expect)
    assert result.iuv[:50, :30, 0].max() == 0  # nothing from the lower-scoring box at the top left


def test_no_detection_gives_background_and_flag():
    for inst in (fake_instances([], []), fake_instances([0.5], [(0, 0, 20, 40)])):
        result = d2.instances_to_result(inst, (16, 8), 0.8)
        assert not result.found
        assert result.iuv.shape == (16, 8, 3) and not result.iuv.any()


def test_detectron2_backend_errors_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="densepose.detectron2.config"):
        d2.Detectron2Estimator(tmp_path / "none.yaml", tmp_path / "none.pkl", torch.device("cpu"))
    cfg_file, weights = tmp_path / "c.yaml", tmp_path / "w.pkl"
    cfg_file.write_text("x: 1\n")
    weights.write_bytes(b"")
    try:
        import detectron2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="no-build-isolation"):
            d2.Detectron2Estimator(cfg_file, weights, torch.device("cpu"), trust_weights=True)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_detectron2_weights_are_refused_before_detectron2_is_imported_unless_trusted(tmp_path, monkeypatch, suffix):
    cfg_file, weights = tmp_path / "c.yaml", tmp_path / f"w{suffix}"
    cfg_file.write_text("x: 1\n")
    weights.write_bytes(b"")
    for name in ("detectron2", "detectron2.config", "detectron2.engine", "densepose"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them now fails at once
    with pytest.raises(ConfigError, match=r"densepose.detectron2.trust_weights: true") as err:
        d2.Detectron2Estimator(cfg_file, weights, torch.device("cpu"))
    assert str(weights) in str(err.value) and ("pickle.load" in str(err.value)) == (suffix == ".pkl")
    with pytest.raises(ImportError, match="no-build-isolation"):  # trusted: it goes on to import detectron2
        d2.Detectron2Estimator(cfg_file, weights, torch.device("cpu"), trust_weights=True)
    cfg = from_mapping(DensePoseConfig, {"backend": "detectron2", "detectron2": {
        "config": str(cfg_file), "weights": str(weights)}}, "densepose")  # a profile may name them untrusted
    assert cfg.detectron2.trust_weights is False
    with pytest.raises(ConfigError, match="trust_weights"):
        build_estimator(cfg, torch.device("cpu"))


def test_detectron2_config_must_be_yaml(tmp_path):
    script = tmp_path / "config.py"
    script.write_text("import os\n")
    (tmp_path / "w.pkl").write_bytes(b"")
    with pytest.raises(ConfigError, match="densepose.detectron2.config.*not a .yaml"):
        from_mapping(DensePoseConfig, {"backend": "detectron2", "detectron2": {
            "config": str(script), "weights": str(tmp_path / "w.pkl"), "trust_weights": True}}, "densepose")
    with pytest.raises(ConfigError, match="not a .yaml"):
        d2.Detectron2Estimator(script, tmp_path / "w.pkl", torch.device("cpu"), trust_weights=True)


def test_detectron2_estimator_feeds_bgr_batches_and_converts(tmp_path):
    # DefaultPredictor stand-in: identity resize, records what the model is given.
    seen = []

    class Model:
        def __call__(self, inputs):
            seen.append(inputs)
            return [{"instances": fake_instances([0.9], [(2.0, 3.0, 10.0, 20.0)], seed=len(seen))} for _ in inputs]

    identity = SimpleNamespace(apply_image=lambda im: im)
    est = object.__new__(d2.Detectron2Estimator)
    est.predictor = SimpleNamespace(input_format="BGR", aug=SimpleNamespace(get_transform=lambda im: identity),
                                    model=Model())
    est.device, est.score_threshold, est.batch_size = torch.device("cpu"), 0.8, 2
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 12, 3), dtype=np.uint8) for _ in range(3)]
    results = est.predict(images, [Path(f"{k}.jpg") for k in range(3)])
    assert [len(batch) for batch in seen] == [2, 1]
    first = seen[0][0]
    assert (first["height"], first["width"]) == (24, 12)
    np.testing.assert_array_equal(first["image"].numpy().transpose(1, 2, 0), images[0][..., ::-1])  # BGR
    assert all(r.found and r.iuv.shape == (24, 12, 3) for r in results)
    assert results[0].iuv[:3, :, 0].max() == 0 and results[0].iuv[3:20, 2:10, 0].any()


def test_detectron2_estimator_batches_only_crops_of_one_size():
    # detectron2 pads a batch to its largest image, which changes the other images' outputs: one model
    # call may hold crops of one size only, and results come back in input order.
    seen = []

    class Model:
        def __call__(self, inputs):
            seen.append([tuple(x["image"].shape[1:]) for x in inputs])
            return [{"instances": fake_instances([0.9], [(0.0, 0.0, x["width"], x["height"])])} for x in inputs]

    identity = SimpleNamespace(apply_image=lambda im: im)
    est = object.__new__(d2.Detectron2Estimator)
    est.predictor = SimpleNamespace(input_format="BGR", aug=SimpleNamespace(get_transform=lambda im: identity),
                                    model=Model())
    est.device, est.score_threshold, est.batch_size = torch.device("cpu"), 0.8, 2
    sizes = [(24, 12), (30, 12), (24, 12), (24, 12), (30, 12)]
    images = [np.zeros((*hw, 3), np.uint8) for hw in sizes]
    results = est.predict(images, [Path(f"{k}.jpg") for k in range(len(images))])
    assert seen == [[(24, 12), (24, 12)], [(24, 12)], [(30, 12), (30, 12)]]
    assert [r.iuv.shape[:2] for r in results] == sizes


def test_cse_outputs_are_refused_clearly():
    inst = fake_instances([0.9], [(0, 0, 4, 4)])
    inst.pred_densepose = SimpleNamespace(embedding=torch.zeros(1, 16, 112, 112), coarse_segm=torch.zeros(1, 2, 112, 112))
    with pytest.raises(ValueError, match="no fine_segm, u, v.*not CSE"):
        d2.instances_to_result(inst, (8, 8), 0.5)
    entry = {"file_name": "q/a.jpg", "scores": torch.tensor([0.9]), "pred_boxes_XYXY": torch.tensor([[0.0, 0, 4, 4]]),
             "pred_densepose": inst.pred_densepose}  # apply_net dump of a CSE model: the output itself, no list
    from reid.densepose.precomputed import dump_entry_to_result
    with pytest.raises(ValueError, match="q/a.jpg.*not CSE"):
        dump_entry_to_result(entry, (8, 8), 0.5)


# --- precomputed -----------------------------------------------------------------------------------

def random_iuv(rng, h=16, w=8):
    iuv = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    iuv[..., 0] = rng.integers(0, N_PARTS + 1, (h, w))
    return iuv


def test_precomputed_png_lookup_split_folder_then_flat(tmp_path):
    rng = np.random.default_rng(0)
    a, b = random_iuv(rng), random_iuv(rng)
    write_bytes_atomic(tmp_path / "iuv" / "query" / "0001_c1s1_000001_00.png", encode_raw(a))
    write_bytes_atomic(tmp_path / "iuv" / "0002_c1s1_000001_00_IUV.png", encode_raw(b))
    image = np.zeros((16, 8, 3), np.uint8)
    est = PrecomputedPNGEstimator(tmp_path / "iuv")
    (ra,) = est.predict([image], [Path("/x/query/0001_c1s1_000001_00.jpg")])
    np.testing.assert_array_equal(ra.iuv, a)
    assert ra.found
    est = PrecomputedPNGEstimator(tmp_path / "iuv", suffix="_IUV")
    (rb,) = est.predict([image], [Path("/x/bounding_box_test/0002_c1s1_000001_00.jpg")])
    np.testing.assert_array_equal(rb.iuv, b)


def test_precomputed_png_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "iuv"
    write_bytes_atomic(root / "small.png", encode_raw(random_iuv(rng, 8, 8)))
    bad = random_iuv(rng)
    bad[0, 0, 0] = 30
    write_bytes_atomic(root / "bad.png", encode_raw(bad))
    write_bytes_atomic(root / "empty.png", encode_raw(np.zeros((16, 8, 3), np.uint8)))
    image = np.zeros((16, 8, 3), np.uint8)
    est = PrecomputedPNGEstimator(root)
    with pytest.raises(ValueError, match=r"small.png: IUV size \(8, 8\) differs"):
        est.predict([image], [Path("q/small.jpg")])
    with pytest.raises(ValueError, match="bad.png: part index 30"):
        est.predict([image], [Path("q/bad.jpg")])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        est.predict([image], [Path("q/missing.jpg")])
    (missing, empty) = PrecomputedPNGEstimator(root, on_missing="not_found").predict(
        [image, image], [Path("q/missing.jpg"), Path("q/empty.jpg")])
    assert not missing.found and not missing.iuv.any()
    assert not empty.found


def test_dump_needs_trust_and_pastes_best_result(tmp_path):
    labels = torch.tensor([[0, 3], [5, 24], [1, 0]])
    uv = torch.tensor([[[0.1, 0.2], [1.3, 0.5], [0.7, 0.0]], [[0.9, -0.1], [0.4, 0.6], [0.2, 0.3]]])
    weak = SimpleNamespace(labels=torch.ones(2, 2, dtype=torch.long), uv=torch.zeros(2, 2, 2))
    entries = [{"file_name": "/data/query/0001_c1s1_000001_00.jpg", "scores": torch.tensor([0.5, 0.97]),
                "pred_boxes_XYXY": torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.6, 1.2, 6.9, 4.4]]),
                "pred_densepose": [weak, SimpleNamespace(labels=labels, uv=uv)]},
               {"file_name": "/data/query/0002_c1s1_000001_00.jpg", "scores": torch.tensor([])}]
    dump = tmp_path / "dump.pkl"
    torch.save(entries, dump)
    with pytest.raises(ValueError, match="trust_dump"):
        DumpEstimator(dump, trust_dump=False)
    est = DumpEstimator(dump, trust_dump=True, score_threshold=0.8)
    image = np.zeros((6, 8, 3), np.uint8)
    r1, r2 = est.predict([image, image], [Path("query/0001_c1s1_000001_00.jpg"), Path("x/0002_c1s1_000001_00.png")])
    expect = np.zeros((6, 8, 3), np.uint8)
    expect[1:4, 4:6, 0] = labels.numpy()
    expect[1:4, 4:6, 1] = np.where(labels > 0, np.rint(np.clip(uv[0].numpy(), 0, 1) * 255), 0)
    expect[1:4, 4:6, 2] = np.where(labels > 0, np.rint(np.clip(uv[1].numpy(), 0, 1) * 255), 0)
    assert r1.found and not r2.found
    np.testing.assert_array_equal(r1.iuv, expect)
    with pytest.raises(KeyError, match="no entry"):
        est.predict([image], [Path("query/9999.jpg")])


def test_dump_without_densepose_importable_says_so(tmp_path, monkeypatch):
    import types
    structures = types.ModuleType("densepose.structures")

    class DensePoseChartResultWithConfidences:  # stands in for the pickled DensePose class
        pass

    DensePoseChartResultWithConfidences.__module__ = "densepose.structures"
    DensePoseChartResultWithConfidences.__qualname__ = "DensePoseChartResultWithConfidences"
    structures.DensePoseChartResultWithConfidences = DensePoseChartResultWithConfidences
    monkeypatch.setitem(sys.modules, "densepose", types.ModuleType("densepose"))
    monkeypatch.setitem(sys.modules, "densepose.structures", structures)
    dump = tmp_path / "dump.pkl"
    torch.save([{"file_name": "q/a.jpg", "pred_densepose": [DensePoseChartResultWithConfidences()]}], dump)
    for name in ("densepose", "densepose.structures"):
        monkeypatch.setitem(sys.modules, name, None)  # DensePose not installed
    with pytest.raises(ImportError, match=r"dump.pkl needs the DensePose classes.*no-build-isolation"):
        DumpEstimator(dump, trust_dump=True)


# --- config / build --------------------------------------------------------------------------------

def test_config_validation_names_parameters():
    with pytest.raises(ConfigError, match="detectron2.config"):
        from_mapping(DensePoseConfig, {"backend": "detectron2"}, "densepose")
    with pytest.raises(ConfigError, match="trust_dump"):
        from_mapping(DensePoseConfig, {"backend": "precomputed", "precomputed": {"dump": "x.pkl"}}, "densepose")
    with pytest.raises(ConfigError, match="exactly one"):
        from_mapping(DensePoseConfig, {"backend": "precomputed"}, "densepose")
    with pytest.raises(ConfigError, match="densepose.backend"):
        from_mapping(DensePoseConfig, {"backend": "magic"}, "densepose")
    cfg = from_mapping(DensePoseConfig, {"backend": "oracle", "batch_size": 4}, "densepose")
    assert isinstance(build_estimator(cfg, torch.device("cpu")), OracleEstimator)


def test_lite_backend_is_built_through_its_loader(tmp_path):
    cfg = from_mapping(DensePoseConfig, {"backend": "lite"}, "densepose")
    with pytest.raises(FileNotFoundError, match="none/model.pt"):
        build_estimator(cfg, torch.device("cpu"), lite_model=tmp_path / "none")
    with pytest.raises(ValueError, match="backend lite needs its network folder"):
        build_estimator(cfg, torch.device("cpu"))


# --- oracle on a tiny rendered world, through the stage function -----------------------------------

def make_world(root: Path, n: int = 5, size=(48, 24)) -> pa.Table:
    """A Market-layout folder of rendered crops with gt_iuv/, and its manifest table."""
    rng = np.random.default_rng(0)
    atlas = rng.integers(0, 256, atlas_shape(8), dtype=np.uint8)
    splits = ["train", "query", "gallery", "gallery", "query"][:n]
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    rows = []
    for k, split in enumerate(splits):
        stem = f"{k + 1:04d}_c1s1_{k:06d}_00"
        rgb, iuv = render_person(atlas, size=size, seed=k, shading=k % 2 == 0)
        rel = f"{folders[split]}/{stem}.png"
        write_image(root / rel, rgb)
        write_bytes_atomic(gt_iuv_path(root / rel), encode_raw(iuv))
        rows.append({"image_id": f"{split}/{stem}", "split": split, "pid": k + 1, "camid": 0, "path": rel,
                     "height": size[0], "width": size[1], "label": 0 if split == "train" else -1})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def test_oracle_scores_perfectly(tmp_path):
    world = tmp_path / "world"
    table = make_world(world)
    metrics = run_densepose(OracleEstimator(), table, world, tmp_path / "iuv.parquet", batch_size=2, backend="oracle")
    assert metrics["n_gt_images"] == 4  # query + gallery rows only
    assert metrics["part_miou"] == 1.0 and metrics["part_miou_fg"] == 1.0
    assert metrics["u_error"] == 0.0 and metrics["v_error"] == 0.0 and metrics["uv_error"] == 0.0
    assert metrics["found_fraction"] == 1.0 and 0.05 < metrics["body_pixel_fraction"] < 0.9
    out = pq.read_table(tmp_path / "iuv.parquet")
    assert out.column("image_id").to_pylist() == table.column("image_id").to_pylist()
    assert out.schema.metadata[b"backend"] == b"oracle"
    for path, blob in zip(table.column("path").to_pylist(), out.column("iuv").to_pylist(), strict=True):
        np.testing.assert_array_equal(decode_raw(blob), decode_raw(gt_iuv_path(world / path).read_bytes()))


def test_a_wrong_backend_scores_below_oracle(tmp_path):
    world = tmp_path / "world"
    table = make_world(world)

    class Shifted:  # every IUV moved one pixel right: a plausible but imperfect estimator
        def predict(self, images, paths):
            out = OracleEstimator().predict(images, paths)
            for r in out:
                r.iuv = np.roll(r.iuv, 1, axis=1)
            return out

    metrics = run_densepose(Shifted(), table, world, tmp_path / "iuv.parquet", backend="shifted")
    assert metrics["part_miou_fg"] < 1.0 and metrics["uv_error"] > 0.0


def test_not_found_rows_are_flagged_and_background(tmp_path):
    world = tmp_path / "world"
    table = make_world(world, n=3)
    (tmp_path / "iuv").mkdir()
    first = table.column("path").to_pylist()[0]
    gt = gt_iuv_path(world / first)
    (tmp_path / "iuv" / gt.name).write_bytes(gt.read_bytes())
    est = PrecomputedPNGEstimator(tmp_path / "iuv", on_missing="not_found")
    metrics = run_densepose(est, table, world, tmp_path / "iuv.parquet", backend="precomputed")
    out = pq.read_table(tmp_path / "iuv.parquet")
    assert out.column("found").to_pylist() == [True, False, False]
    assert not decode_raw(out.column("iuv")[1].as_py()).any()
    assert metrics["found_fraction"] == pytest.approx(1 / 3)
    assert metrics["part_miou_fg"] < 0.5  # the two test crops were not found: scored as all background


def test_densepose_stage_end_to_end(tmp_path, monkeypatch):
    world = tmp_path / "world"
    table = make_world(world)
    monkeypatch.chdir(tmp_path)
    write_manifest("data/manifest.parquet", table, dataset="synthetic", root=world)
    Path("params.yaml").write_text("densepose:\n  backend: oracle\n  batch_size: 2\n  device: cpu\n")
    from stages import densepose as stage
    stage.main(["--manifest", "data/manifest.parquet", "--lite-model", "none", "--out", "data/iuv.parquet",
                "--metrics", "metrics/densepose.json"])  # oracle: the lite network is never read
    metrics = json.loads(Path("metrics/densepose.json").read_text())
    assert metrics["part_miou"] == 1.0 and metrics["uv_error"] == 0.0 and metrics["n_images"] == 5
    assert pq.read_table("data/iuv.parquet").num_rows == 5
