import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from reid.config import ConfigError
from reid.evaluation import EvaluateConfig, RerankConfig, evaluate_features, load_eval_set
from reid.features import read_features, write_features
from reid.io import read_image, write_image, write_parquet_atomic
from reid.metrics import evaluate, evaluate_ranked
from reid.retrieval import rerank, rerank_distances


def planted(seed=0, n_ids=12, per_id=5, dim=6, noise=2, near_junk=0):
    """Integer features (distances exact in float32, ties possible), junk, distractors, same-camera items.

    `near_junk`: that many more junk items (pid -1), each a near copy of one of the first queries, like
    bad crops of a person; far junk never enters a k-reciprocal set, these do unless dropped first."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(-20, 21, (n_ids, dim))
    g_pids = np.concatenate([np.repeat(np.arange(1, n_ids + 1), per_id), [0, 0, 0, -1, -1]])
    g_cams = rng.integers(0, 3, len(g_pids))
    q_pids = np.arange(1, n_ids + 1)
    q_cams = rng.integers(0, 3, n_ids)
    g = np.concatenate([np.repeat(centres, per_id, 0), rng.integers(-20, 21, (5, dim))])
    g = g + rng.integers(-noise, noise + 1, g.shape)
    q = centres + rng.integers(-noise, noise + 1, centres.shape)
    if near_junk:  # drawn last: the other items stay those of the same seed without near junk
        g = np.concatenate([g, q[:near_junk] + rng.integers(-1, 2, (near_junk, dim))])
        g_pids = np.concatenate([g_pids, np.full(near_junk, -1)])
        g_cams = np.concatenate([g_cams, rng.integers(0, 3, near_junk)])
    return q.astype(np.float32), g.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def _dist(q, g):
    return ((q.astype(np.float64)[:, None] - g[None]) ** 2).sum(-1)


def _same(a, b):
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert (a.mAP, a.mINP, a.mAP_official, a.n_query_valid) == (b.mAP, b.mINP, b.mAP_official, b.n_query_valid)
    _same_per_query(a, b)


def _same_per_query(a, b):
    for name, values in a.per_query.columns().items():
        np.testing.assert_array_equal(values, getattr(b.per_query, name), err_msg=name)  # NaN == NaN here


@pytest.mark.parametrize("seed", [0, 1])
def test_feature_evaluation_equals_distance_matrix(seed):
    q, g, qp, gp, qc, gc = planted(seed, noise=10)
    ref = evaluate(_dist(q, g), qp, gp, qc, gc, max_rank=20)
    assert 0 < ref.mAP < 1
    _same(evaluate_features(q, g, qp, gp, qc, gc, max_rank=20), ref)  # exact chunked path
    _same(evaluate_features(q, g, qp, gp, qc, gc, max_rank=20, top_k=len(g)), ref)  # FAISS lists, full depth


def test_single_gallery_shot_from_features():
    q, g, qp, gp, qc, gc = planted(5, noise=10)
    ref = evaluate(_dist(q, g), qp, gp, qc, gc, max_rank=10, single_gallery_shot=4, seed=7)
    got = evaluate_features(q, g, qp, gp, qc, gc, max_rank=10, single_gallery_shot=4, seed=7)
    np.testing.assert_array_equal(got.cmc, ref.cmc)
    assert got.protocol == ref.protocol == "cuhk03_single_gallery_shot_x4"
    with pytest.raises(ValueError, match="single_gallery_shot"):
        evaluate_features(q, g, qp, gp, qc, gc, top_k=5, single_gallery_shot=4)


def test_small_top_k_keeps_cmc_exact():
    q, g, qp, gp, qc, gc = planted(2, noise=8)
    ref = evaluate(_dist(q, g), qp, gp, qc, gc, max_rank=20)
    for k in (1, 3, 7):
        cut = evaluate_features(q, g, qp, gp, qc, gc, max_rank=20, top_k=k)
        np.testing.assert_allclose(cut.cmc[:k], ref.cmc[:k])
        assert cut.mAP <= ref.mAP and cut.n_query_valid == ref.n_query_valid
    assert evaluate_features(q, g, qp, gp, qc, gc, max_rank=20, top_k=3).mAP < ref.mAP


def test_rerank_path_and_cosine():
    q, g, qp, gp, qc, gc = planted(3, noise=6, near_junk=6)
    cfg = RerankConfig(enabled=True, k1=4, k2=2, lambda_value=0.3)
    r = evaluate_features(q, g, qp, gp, qc, gc, max_rank=10, rerank_cfg=cfg)
    # the stage's route (evaluate_set -> evaluate_features): junk is dropped before re-ranking
    _, idx = rerank(q, g, k1=4, k2=2, lambda_value=0.3, exclude=gp == -1)
    _same(r, evaluate_ranked(idx, qp, gp, qc, gc, max_rank=10))
    _, idx_with_junk = rerank(q, g, k1=4, k2=2, lambda_value=0.3)
    assert evaluate_ranked(idx_with_junk, qp, gp, qc, gc, max_rank=10).mAP != r.mAP  # the junk does matter here
    _same(evaluate_features(q, g, qp, gp, qc, gc, max_rank=10, rerank_cfg=cfg, top_k=len(g)), r)  # full-depth lists
    cos = evaluate_features(q, g, qp, gp, qc, gc, max_rank=10, metric="cosine")
    cos_k = evaluate_features(q, g, qp, gp, qc, gc, max_rank=10, metric="cosine", top_k=len(g))
    np.testing.assert_allclose(cos.cmc, cos_k.cmc)
    assert cos.mAP == pytest.approx(cos_k.mAP)


@pytest.mark.parametrize("seed", [0, 3])
def test_exact_rerank_streams_chunks_into_the_scorer(seed, monkeypatch):
    """rerank with top_k=None scores re-ranked chunks as they come: the same result as the metrics of
    the whole re-ranked matrix, without ever ranking the whole gallery (`rerank`)."""
    import reid.evaluation as ev

    q, g, qp, gp, qc, gc = planted(seed, noise=6, near_junk=4)
    cfg = RerankConfig(enabled=True, k1=4, k2=2, lambda_value=0.3)
    junk = gp == -1
    dense = np.concatenate([d for _, d in rerank_distances(q, g, k1=4, k2=2, lambda_value=0.3, exclude=junk)])
    ref = evaluate(dense, qp, gp, qc, gc, max_rank=20)
    assert 0 < ref.mAP < 1
    _same(evaluate_ranked(rerank(q, g, k1=4, k2=2, lambda_value=0.3, exclude=junk)[1], qp, gp, qc, gc, max_rank=20),
          ref)  # the old route: every query's whole re-ranked list

    def whole_ranking(*args, **kwargs):
        raise AssertionError("the exact path must not rank the whole gallery")

    monkeypatch.setattr(ev, "rerank", whole_ranking)
    _same(evaluate_features(q, g, qp, gp, qc, gc, max_rank=20, rerank_cfg=cfg), ref)
    # 5 queries a chunk: 3 chunks, each scored against its own queries' labels
    monkeypatch.setattr(ev, "rerank_distances", functools.partial(rerank_distances, chunk=5))
    chunked = evaluate_features(q, g, qp, gp, qc, gc, max_rank=20, rerank_cfg=cfg)
    _same_per_query(chunked, ref)
    np.testing.assert_allclose(chunked.cmc, ref.cmc, rtol=1e-12)
    assert (chunked.mAP, chunked.mINP) == (pytest.approx(ref.mAP, rel=1e-12), pytest.approx(ref.mINP, rel=1e-12))


def test_exact_path_on_tensors_equals_numpy(monkeypatch):
    """The CUDA route of the exact path (torch distance chunks copied back) run on CPU tensors."""
    import torch

    import reid.evaluation as ev

    q, g, qp, gp, qc, gc = planted(1, noise=10)
    want = evaluate_features(q, g, qp, gp, qc, gc, max_rank=20)
    monkeypatch.setattr(ev, "on_device", lambda a, device: torch.from_numpy(a))
    _same(evaluate_features(q, g, qp, gp, qc, gc, max_rank=20), want)


def test_feature_bad_input():
    q, g, qp, gp, qc, gc = planted(0)
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_features(q, g, qp[:-1], gp, qc, gc)
    bad = g.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="gallery features: 1 feature row"):
        evaluate_features(q, bad, qp, gp, qc, gc)
    with pytest.raises(ValueError, match="empty"):
        evaluate_features(q[:0], g, qp[:0], gp, qc[:0], gc)
    with pytest.raises(ValueError, match="-d"):
        evaluate_features(q[:, :3], g, qp, gp, qc, gc)


def test_feature_file_round_trip_and_errors(tmp_path):
    feats = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    write_features(tmp_path / "f.parquet", ["a", "b", "c", "d"], feats)
    file = read_features(tmp_path / "f.parquet")
    ids, back = file.image_ids, file.features
    assert ids == ["a", "b", "c", "d"] and back.dtype == np.float32
    np.testing.assert_array_equal(back, feats)
    write_parquet_atomic(tmp_path / "bad.parquet", pa.table({"image_id": ["a"], "feature": [[1.0, 2.0]]}))
    with pytest.raises(ValueError, match="bad.parquet.*fixed_size_list<float32>"):
        read_features(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_features(tmp_path / "missing.parquet")


def make_world(root, features=True, nan=False):
    """Tiny manifest + images + planted features under `root` (the layout the stage reads)."""
    q, g, qp, gp, qc, gc = planted(4, n_ids=6, per_id=3)
    rows, feats, ids = [], [], []
    rng = np.random.default_rng(0)
    for split, f, pids, cams in (("query", q, qp, qc), ("gallery", g, gp, gc), ("train", g[:4], gp[:4], gc[:4])):
        for i, (vec, pid, cam) in enumerate(zip(f, pids, cams, strict=True)):
            image_id, path = f"{split}/{i:04d}", f"img/{split}_{i:04d}.png"
            write_image(root / "ds" / path, rng.integers(0, 255, (16, 8, 3), dtype=np.uint8))
            rows.append((image_id, split, int(pid), int(cam), path, 16, 8, -1))
            if split != "train":  # train rows have no features: they must never be read
                ids.append(image_id)
                feats.append(vec)
    cols = list(zip(*rows, strict=True))
    names = ["image_id", "split", "pid", "camid", "path", "height", "width", "label"]
    table = pa.table({n: pa.array(c, pa.string() if n in ("image_id", "split", "path") else pa.int32())
                      for n, c in zip(names, cols, strict=True)})
    write_parquet_atomic(root / "data" / "manifest.parquet", table, {"root": str(root / "ds")})
    feats = np.stack(feats)
    if nan:
        feats[2, 0] = np.nan
    if features:
        write_features(root / "data" / "features" / "toy.parquet", ids, feats)
    return q, g, qp, gp, qc, gc


def test_load_eval_set_errors(tmp_path):
    make_world(tmp_path, features=False)
    write_features(tmp_path / "f.parquet", ["query/0000"], np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match="f.parquet: 5 query image"):
        load_eval_set(tmp_path / "f.parquet", tmp_path / "data" / "manifest.parquet")
    make_world(tmp_path, nan=True)
    with pytest.raises(ValueError, match="toy.parquet \\(query rows\\): 1 feature row"):
        load_eval_set(tmp_path / "data/features/toy.parquet", tmp_path / "data" / "manifest.parquet")


EVAL_ARGS = ["toy", "--features", "data/features", "--manifest", "data/manifest.parquet",
             "--metrics", "metrics/toy.json", "--cmc", "metrics/cmc/toy.tsv", "--out", "data/eval/toy"]


def test_stage_end_to_end(tmp_path, monkeypatch):
    from stages import evaluate as stage

    q, g, qp, gp, qc, gc = make_world(tmp_path)
    params = {"evaluate": {"max_rank": 5, "top_k": None, "normalize": False, "n_ranked_queries": 3,
                           "ranked_list_size": 4, "rerank": {"enabled": False}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    stage.main(EVAL_ARGS)
    metrics = json.loads((tmp_path / "metrics" / "toy.json").read_text())
    ref = evaluate(_dist(q, g), qp, gp, qc, gc, max_rank=5)
    assert metrics["mAP_pct"] == pytest.approx(100 * ref.mAP, abs=1e-3)
    assert metrics["rank1_pct"] == pytest.approx(100 * ref.cmc[0], abs=1e-3)
    assert metrics["rank5_pct"] == pytest.approx(100 * ref.cmc[4], abs=1e-3)
    assert "rank10_pct" not in metrics  # beyond max_rank: not guessed
    assert (metrics["n_query"], metrics["n_gallery"]) == (6, len(g))
    lines = (tmp_path / "metrics" / "cmc" / "toy.tsv").read_text().splitlines()
    assert lines[0] == "rank\taccuracy_pct" and len(lines) == 6
    picture = read_image(tmp_path / "data" / "eval" / "toy" / "ranked_list.png")
    assert picture.shape[1] > 5 * 8 and picture.shape[0] > 3 * 16
    # a bad parameter is named
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"top_k": 0}}))
    with pytest.raises(ConfigError, match="top_k"):
        stage.main(EVAL_ARGS)


def test_config_rejects_single_shot_with_top_k():
    with pytest.raises(ValueError, match="single_gallery_shot"):
        EvaluateConfig(top_k=5, single_gallery_shot=3).validate()


def test_stage_writes_per_query_values_consistent_with_the_metrics(tmp_path, monkeypatch):
    from stages import evaluate as stage

    q, g, qp, gp, qc, gc = make_world(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"max_rank": 5, "normalize": False}}))
    monkeypatch.chdir(tmp_path)
    stage.main(EVAL_ARGS)
    metrics = json.loads((tmp_path / "metrics" / "toy.json").read_text())
    assert "diagnostics" not in metrics  # no extra feature sets
    table = pq.read_table(tmp_path / "data" / "eval" / "toy" / "per_query.parquet")
    assert table.column_names == ["image_id", "pid", "camid", "valid", "ap", "first_hit", "inp"]
    assert [str(t) for t in table.schema.types] == ["string", "int64", "int64", "bool", "double", "int64", "double"]
    rows = table.to_pydict()
    assert rows["image_id"] == [f"query/{i:04d}" for i in range(len(q))]  # manifest order
    assert rows["pid"] == qp.tolist() and rows["camid"] == qc.tolist()
    valid = np.array(rows["valid"])
    assert valid.sum() == metrics["n_query_valid"]
    assert 100 * np.mean(np.array(rows["ap"])[valid]) == pytest.approx(metrics["mAP_pct"], abs=1e-3)
    assert 100 * np.mean(np.array(rows["inp"])[valid]) == pytest.approx(metrics["mINP_pct"], abs=1e-3)
    assert 100 * np.mean(np.array(rows["first_hit"])[valid] == 0) == pytest.approx(metrics["rank1_pct"], abs=1e-3)


def test_stage_evaluates_fused_and_guide_features_into_diagnostics(tmp_path, monkeypatch):
    from stages import evaluate as stage

    q, g, qp, gp, qc, gc = make_world(tmp_path)
    toy = read_features(tmp_path / "data" / "features" / "toy.parquet")
    ids, feats = toy.image_ids, toy.features
    noisy = feats + np.random.default_rng(1).normal(0, 8, feats.shape).astype(np.float32)
    write_features(tmp_path / "data" / "features" / "toy_fused.parquet", ids, feats)  # same as mf
    write_features(tmp_path / "data" / "features" / "toy_guide.parquet", ids, noisy)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"max_rank": 5, "normalize": False}}))
    monkeypatch.chdir(tmp_path)
    stage.main(EVAL_ARGS)
    metrics = json.loads((tmp_path / "metrics" / "toy.json").read_text())
    diag = metrics["diagnostics"]
    assert set(diag) == {"mf", "fused", "guide"}
    assert diag["mf"] == {k: metrics[k] for k in ("rank1_pct", "mAP_pct", "mINP_pct")} == diag["fused"]
    guide = evaluate(_dist(noisy[:len(q)], noisy[len(q):]), qp, gp, qc, gc, max_rank=5)  # ids: queries first
    assert diag["guide"]["mAP_pct"] == pytest.approx(100 * guide.mAP, abs=1e-3)
