"""The report: summary table from metrics files, the papers' orderings, the figure sheet, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from reid.densepose.quality import quality_warnings
from reid.evaluation import write_cmc
from reid.export import INFO_FILE, model_info, write_model_info
from reid.io import read_image, write_image, write_parquet_atomic
from reid.modeling.config import ModelConfig
from reid.report import (
    MODEL_INFO_FILE,
    ClaimResult,
    ModelResult,
    QueryTable,
    claim_verdict,
    claims_table,
    cost_section,
    dense_semantics_lines,
    figure_sheet,
    judge_claims,
    load_model_result,
    paired_bootstrap,
    paired_query_values,
    paper_table,
    read_cmc,
    read_model_cost,
    read_query_table,
    summary_markdown,
)

SCORES = {"rank1_pct": 60.0, "rank5_pct": 80.0, "rank10_pct": 90.0, "mAP_pct": 50.0, "mINP_pct": 30.0,
          "mAP_official_pct": 48.0, "n_query_valid": 12}


def result(name: str, rank1: float, mAP: float) -> ModelResult:
    return ModelResult(name, {**SCORES, "rank1_pct": rank1, "mAP_pct": mAP},
                       {"train_time_s": 12.3, "images_per_s": 40, "steps": 300, "final_id_loss": 1.23456})


def query_table(ap: np.ndarray, first_hit: np.ndarray | None = None, valid: np.ndarray | None = None) -> QueryTable:
    """A per-query table over queries q0000, q0001, ... (all valid unless told)."""
    n = len(ap)
    return QueryTable(np.array([f"q{i:04d}" for i in range(n)], dtype=object),
                      np.ones(n, bool) if valid is None else valid, np.asarray(ap, np.float64),
                      np.zeros(n, np.int64) if first_hit is None else np.asarray(first_hit, np.int64))


def write_query_file(path: str | Path, table: QueryTable) -> None:
    """The per-query file as reid.evaluation.run_evaluation writes it."""
    n = len(table.ap)
    write_parquet_atomic(path, pa.table({
        "image_id": pa.array(list(table.image_id), pa.string()), "pid": pa.array(np.arange(n), pa.int64()),
        "camid": pa.array(np.zeros(n, np.int64)), "valid": pa.array(table.valid), "ap": pa.array(table.ap),
        "first_hit": pa.array(table.first_hit), "inp": pa.array(table.ap)}))


def cost(train_params: int, train_flops: int, infer_params: int, infer_flops: int) -> dict[str, dict[str, int]]:
    return {"training": {"params": train_params, "flops": train_flops},
            "inference": {"params": infer_params, "flops": infer_flops}}


# dsa and dsa_san infer as baseline2b, san as baseline: the regulators are training-only
COSTS = {"baseline": cost(24_000_000, 4_000_000_000, 23_500_000, 4_000_000_000),
         "baseline2b": cost(30_000_000, 5_000_000_000, 29_000_000, 4_500_000_000),
         "dsa": cost(41_000_000, 9_000_000_000, 29_000_000, 4_500_000_000),
         "san": cost(35_000_000, 7_250_000_000, 23_500_000, 4_000_000_000)}


def write_model_json(folder: str | Path, name: str, model_cost: dict | None) -> Path:
    """A model.json exactly as the train stage writes it (reid.export), with `model_cost` as its cost."""
    shapes = {"dsap_size": 16} if "dsa" in name else {}
    shapes |= {"texture_tile": 8} if "san" in name else {}
    return write_model_info(folder, model_info(name, ModelConfig(pretrained=None), (256, 128), **shapes,
                                               cost=model_cost))


def table_row(text: str, first_cell: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_bootstrap_of_identical_models_is_inconclusive_around_zero():
    ap = np.random.default_rng(0).random(200)
    delta, lo, hi = paired_bootstrap(ap, ap.copy(), n_boot=1000)
    assert delta == 0 and lo <= 0 <= hi and claim_verdict(lo, hi) == "inconclusive"


def test_bootstrap_of_a_model_better_or_worse_on_every_query():
    rng = np.random.default_rng(1)
    worse = rng.random(150) * 0.8
    better = worse + rng.random(150) * 0.2 + 0.01
    delta, lo, hi = paired_bootstrap(better, worse)
    assert 0 < lo <= delta <= hi and claim_verdict(lo, hi) == "holds"
    delta, lo, hi = paired_bootstrap(worse, better)
    assert lo <= delta <= hi < 0 and claim_verdict(lo, hi) == "reversed"


def test_bootstrap_uses_the_same_queries_for_both_models():
    # one point better on every query: any shared resample gives exactly +1; independent ones would not
    ap = np.random.default_rng(2).integers(0, 64, 300) / 128  # binary fractions: the 1/128 shift is exact
    delta, lo, hi = paired_bootstrap(ap + 1 / 128, ap)
    assert (delta, lo, hi) == pytest.approx((100 / 128,) * 3, abs=1e-9)
    ap = np.random.default_rng(3).random(300)
    assert paired_bootstrap(ap + 0.01, ap) == pytest.approx((1.0, 1.0, 1.0), abs=1e-9)


def test_bootstrap_is_seeded_and_chunked_alike(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.random(80), rng.random(80)
    first = paired_bootstrap(a, b, n_boot=1000, seed=7)
    assert paired_bootstrap(a, b, n_boot=1000, seed=7) == first
    assert paired_bootstrap(a, b, n_boot=1000, seed=8) != first
    assert first[0] == pytest.approx(100 * (a.mean() - b.mean()))
    import reid.report

    monkeypatch.setattr(reid.report, "BOOTSTRAP_BLOCK", 80 * 3)  # 3 resamples per block: same draws
    assert paired_bootstrap(a, b, n_boot=1000, seed=7) == pytest.approx(first)


def test_paired_values_join_on_image_id_and_refuse_other_query_sets():
    a = query_table(np.array([0.1, 0.2, 0.3, np.nan]), first_hit=[0, 1, 0, -1], valid=np.array([1, 1, 1, 0], bool))
    shuffled = QueryTable(a.image_id[::-1].copy(), a.valid[::-1].copy(), a.ap[::-1].copy(), a.first_hit[::-1].copy())
    va, vb = paired_query_values(a, shuffled, "mAP")
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(paired_query_values(a, shuffled, "rank1")[1], [1.0, 0.0, 1.0])
    other_valid = QueryTable(a.image_id, np.array([1, 1, 0, 1], bool), a.ap, a.first_hit)
    with pytest.raises(ValueError, match="dsa and baseline2b have different valid query sets.*q0002"):
        paired_query_values(a, other_valid, "mAP", ("dsa", "baseline2b"))
    with pytest.raises(ValueError, match="different query sets"):
        paired_query_values(a, query_table(np.ones(3)), "mAP")
    with pytest.raises(ValueError, match="no valid query"):
        paired_bootstrap(np.zeros(0), np.zeros(0))


def test_claims_are_judged_on_both_rank1_and_map_for_models_in_the_run():
    rng = np.random.default_rng(5)
    ap = rng.random(120)
    hits = (rng.random(120) < 0.5).astype(np.int64)  # first_hit 0 or 1
    tables = {"baseline": query_table(ap, hits), "baseline2b": query_table(ap + 0.05, hits),
              "dsa": query_table(ap + 0.05, 1 - hits)}
    claims = judge_claims(tables, ["baseline", "baseline2b", "dsa"], n_boot=1000)
    assert [(c.claim, c.metric) for c in claims] == [("dsa > baseline2b", "rank1"), ("dsa > baseline2b", "mAP"),
                                                     ("baseline2b > baseline", "rank1"),
                                                     ("baseline2b > baseline", "mAP")]
    by = {(c.claim, c.metric): c for c in claims}
    assert by["baseline2b > baseline", "mAP"].verdict == "holds" and by["baseline2b > baseline", "mAP"].delta == 5.0
    assert by["baseline2b > baseline", "rank1"].verdict == "inconclusive"
    assert by["baseline2b > baseline", "rank1"].ci95 == [0.0, 0.0]
    assert by["dsa > baseline2b", "mAP"].delta == 0 and by["dsa > baseline2b", "mAP"].source == "DSA Table 3"
    text = claims_table(claims)
    row = table_row(text, "`baseline2b` > `baseline`")
    assert row[1:] == ["DSA Table 3", "+0.0 [+0.0, +0.0]", "inconclusive", "+5.0 [+5.0, +5.0]", "holds"]
    assert "san" not in text  # claims about models not in the run are left out


def test_summary_lists_every_model_and_labels_the_papers_numbers_as_another_dataset():
    text = summary_markdown([result("baseline", 60, 50), result("dsa", 65, 55)], "synthetic",
                            densepose={"part_miou": 0.5, "uv_error": 0.07, "found_fraction": 0.98},
                            sanpg={"heldout_l1": 0.3, "heldout_l1_mean_texture": 0.4}, backend="lite")
    assert table_row(text, "`baseline`")[1:7] == ["60.0", "80.0", "90.0", "50.0", "30.0", "48.0"]
    assert table_row(text, "`dsa`")[-3:] == ["12", "300", "1.235"]  # queries, optimiser steps, final ID loss
    assert "train time" not in text and "images/s" not in text  # timings make `dvc metrics diff` noisy
    assert "No ordering" in text  # no claims given
    assert "not on `synthetic`" in text and "different dataset" in text
    assert table_row(text, "DSA-reID (CVPR19, Table 2)")[1:3] == ["`dsa`", "95.7 / 87.6"]
    assert "part mIoU 0.500" in text and "`lite` backend" in text and "L1 0.300 vs 0.400" in text
    on_market = summary_markdown([result("baseline", 60, 50)], "market1501")
    assert "on **market1501** itself" in on_market


def test_summary_shows_the_pretrained_row_first_diagnostics_and_claim_intervals():
    dsa = result("dsa", 65, 55)
    dsa.diagnostics = {"mf": {"rank1_pct": 65.0, "mAP_pct": 55.0, "mINP_pct": 30.0},
                       "fused": {"rank1_pct": 66.0, "mAP_pct": 56.0, "mINP_pct": 31.0},
                       "guide": {"rank1_pct": 20.0, "mAP_pct": 10.0, "mINP_pct": 5.0}}
    pretrained = ModelResult("pretrained", {**SCORES, "rank1_pct": 12.0})
    claims = [ClaimResult("dsa > baseline", "somewhere", "rank1", 3.21, [1.1, 5.04], "holds"),
              ClaimResult("dsa > baseline", "somewhere", "mAP", -0.5, [-2.0, 1.0], "inconclusive")]
    text = summary_markdown([result("baseline", 60, 50), dsa], "synthetic", claims=claims,
                            method="paired bootstrap, B=1000", pretrained=pretrained)
    model_rows = [line for line in text.splitlines() if line.startswith("| ") and "Rank-1" not in line]
    assert model_rows[0].startswith("| pretrained trunk, no fine-tuning | 12.0 |")
    assert table_row(text, "pretrained trunk, no fine-tuning")[-2:] == ["—", "—"]  # no training
    assert table_row(text, "`dsa` | fused z = f + d")[2:] == ["66.0", "56.0"]
    assert table_row(text, "`dsa` | guide d alone")[2:] == ["20.0", "10.0"]
    assert "| `baseline` | mf" not in text  # a model without diagnostics has no rows there
    row = table_row(text, "`dsa` > `baseline`")
    assert row[1:] == ["somewhere", "+3.2 [+1.1, +5.0]", "holds", "-0.5 [-2.0, +1.0]", "inconclusive"]
    assert "paired bootstrap, B=1000" in text
    assert "Feature diagnostics" not in summary_markdown([result("baseline", 60, 50)], "synthetic")


def test_paper_table_marks_rows_without_our_model():
    text = paper_table(["baseline"])
    assert table_row(text, "DSA Table 3: Baseline (RE+LS)")[1] == "`baseline`"
    assert table_row(text, "SAN (AAAI20)")[1:] == ["—", "96.1 / 88.0", "87.9 / 75.5", "—", "—"]


def test_missing_or_incomplete_metrics_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="baseline.json"):
        load_model_result("baseline", tmp_path, tmp_path / "train")
    (tmp_path / "baseline.json").write_text(json.dumps({"rank1_pct": 1.0}))
    with pytest.raises(ValueError, match=r"baseline.json: lacks rank5_pct"):
        load_model_result("baseline", tmp_path, tmp_path / "train")
    (tmp_path / "baseline.json").write_text("{not json")
    with pytest.raises(ValueError, match="baseline.json: not valid JSON"):
        load_model_result("baseline", tmp_path, tmp_path / "train")


def test_cost_table_reads_model_json_and_computes_which_models_infer_alike(tmp_path):
    assert MODEL_INFO_FILE == INFO_FILE
    costs = {m: read_model_cost(write_model_json(tmp_path / m, m, c)) for m, c in COSTS.items()}
    costs["dsa_san"] = read_model_cost(write_model_json(tmp_path / "dsa_san", "dsa_san", None))  # no cost recorded
    assert costs["dsa"] == COSTS["dsa"] and costs["dsa_san"] is None
    text = "\n".join(cost_section(costs))
    assert table_row(text, "`dsa`")[1:] == ["41.000", "9.000", "29.000", "4.500"]
    assert table_row(text, "`san`")[1:] == ["35.000", "7.250", "23.500", "4.000"]
    assert table_row(text, "`dsa_san`")[1:] == ["—", "—", "—", "—"]
    assert ("- `dsa` infers at exactly `baseline2b`'s cost (same parameters and FLOPs), with +11.000 M parameters "
            "and +4.000 GFLOPs at training.") in text
    assert "- `san` infers at exactly `baseline`'s cost" in text
    assert "`dsa_san` infers" not in text and "`dsa_san` does" not in text  # nothing to compare

    costs["san"] = cost(35_000_000, 7_250_000_000, 23_500_001, 4_000_000_000)  # one parameter more
    text = "\n".join(cost_section(costs))
    assert "- `san` does **not** infer at `baseline`'s cost: +0.000 M parameters, +0.000 GFLOPs at inference." in text
    assert cost_section({"baseline": None}) == []
    summary = summary_markdown([result("baseline", 60, 50)], "synthetic", costs={"baseline": COSTS["baseline"]})
    assert table_row(summary, "`baseline`")[1:] == ["60.0", "80.0", "90.0", "50.0", "30.0", "48.0", "12", "300", "1.235"]
    assert "## Model cost" in summary and "| `baseline` | 24.000 | 4.000 | 23.500 | 4.000 |" in summary
    assert "Model cost" not in summary_markdown([result("baseline", 60, 50)], "synthetic")


def test_a_bad_cost_in_model_json_names_the_file(tmp_path):
    path = write_model_json(tmp_path, "baseline", COSTS["baseline"])
    data = json.loads(path.read_text())
    data["cost"]["inference"]["flops"] = 1.5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"model.json: cost.inference.flops must be a count, got 1.5"):
        read_model_cost(path)
    data["cost"] = {"training": COSTS["baseline"]["training"]}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"cost.inference.params must be a count, got None"):
        read_model_cost(path)
    with pytest.raises(FileNotFoundError, match="nowhere/model.json: missing"):
        read_model_cost(tmp_path / "nowhere" / "model.json")


def test_regulator_inputs_below_their_floors_are_warned_about():
    good_iuv = {"found_fraction": 0.99, "body_pixel_fraction": 0.24, "n_gt_images": 10, "part_miou": 0.64,
                "uv_error": 0.05}
    good_dsap = {"mean_parts_seen": 19.0, "mean_coverage": 0.22}
    lines = dense_semantics_lines(good_iuv, None, None, "lite", good_dsap)
    assert not any("Warning" in line for line in lines)
    assert "- DSAP images: 19.0 of the 24 parts per crop reached by a pixel, 22.0% of the part grids' cells covered" in lines
    garbage = {**good_iuv, "part_miou": 0.001, "body_pixel_fraction": 0.01}  # the micro profile's lite DensePose
    warnings = [line for line in dense_semantics_lines(garbage, None, None, "lite", {**good_dsap, "mean_parts_seen": 1.2})
                if line.startswith("- **Warning**")]
    assert warnings == [
        "- **Warning**: DensePose labels 1.0% of a crop's pixels as body (floor 5%): the regulators' dense "
        "semantics are mostly noise here",
        "- **Warning**: DensePose part mIoU is 0.001 (floor 0.25): the regulators' dense semantics are mostly noise here",
        "- **Warning**: the DSAP images hold 1.2 of the 24 parts per crop (floor 8): the regulators' dense semantics "
        "are mostly noise here"]
    real = {"found_fraction": 0.3, "body_pixel_fraction": 0.3, "n_gt_images": 0}  # no ground truth: no mIoU to judge
    assert [w.split(" (")[0] for w in quality_warnings(real)] == ["DensePose found a person in 30.0% of crops"]


def test_cmc_round_trips_through_the_evaluation_writer(tmp_path):
    write_cmc(tmp_path / "cmc.tsv", np.array([0.5, 0.75, 1.0]))
    ranks, acc = read_cmc(tmp_path / "cmc.tsv")
    assert ranks.tolist() == [1, 2, 3] and acc.tolist() == pytest.approx([50.0, 75.0, 100.0])


def test_figure_sheet_stacks_titled_pictures_at_one_width():
    sheet = figure_sheet([("a", np.zeros((10, 20, 3), np.uint8)), ("b", np.zeros((50, 50, 3), np.uint8))], width=100)
    assert sheet.shape == (28 + 50 + 28 + 100, 100, 3)
    assert (sheet[28:78] == 0).all() and (sheet[:28] > 0).any()


REPORT_ARGS = ["--scores", "metrics", "--train-metrics", "metrics/train", "--cmc", "metrics/cmc", "--eval", "data/eval",
               "--models", "data/models",
               "--densepose-metrics", "metrics/densepose.json", "--dsap-metrics", "metrics/dsap.json",
               "--sanpg-metrics", "metrics/sanpg.json",
               "--texture-metrics", "metrics/texture.json", "--dsap-samples", "data/dsap_samples.png",
               "--texture-samples", "data/texture_samples.png", "--cross", "metrics/cross",
               "--cross-eval", "data/target/eval", "--summary", "metrics/summary.md",
               "--claims", "metrics/claims.json", "--figures", "data/report/figures.png"]


def test_report_stage_writes_summary_claims_and_figures(tmp_path, monkeypatch):
    import stages.report as stage

    monkeypatch.chdir(tmp_path)
    models = ["baseline", "baseline2b", "dsa"]
    ap = np.random.default_rng(6).random(50)
    for i, m in enumerate(models):
        Path("metrics/train").mkdir(parents=True, exist_ok=True)
        Path(f"metrics/{m}.json").write_text(json.dumps({**SCORES, "rank1_pct": 60.0 + i}))
        Path(f"metrics/train/{m}.json").write_text(json.dumps({"train_time_s": 5.0, "images_per_s": 9.0}))
        write_cmc(f"metrics/cmc/{m}.tsv", np.linspace(0.5, 1.0, 20))
        write_image(f"data/eval/{m}/ranked_list.png", np.full((30, 120, 3), 100, np.uint8))
        write_query_file(f"data/eval/{m}/per_query.parquet", query_table(ap + 0.1 * i))
        write_model_json(f"data/models/{m}", m, COSTS[m])
    Path("metrics/pretrained.json").write_text(json.dumps({**SCORES, "rank1_pct": 5.0}))
    params = {"report": {"models": models, "bootstrap": 1000, "bootstrap_seed": 3},
              "prepare": {"dataset": "synthetic"}, "densepose": {"backend": "oracle"}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    stage.main(REPORT_ARGS)
    summary = Path("metrics/summary.md").read_text()
    assert table_row(summary, "`dsa`")[1] == "62.0" and "`san` > `baseline`" not in summary
    assert table_row(summary, "pretrained trunk, no fine-tuning")[1] == "5.0"
    assert "| `dsa` | 41.000 | 9.000 | 29.000 | 4.500 |" in summary
    assert "- `dsa` infers at exactly `baseline2b`'s cost" in summary and "`san` infers" not in summary
    assert read_image("data/report/figures.png").shape[1] == 900
    claims = json.loads(Path("metrics/claims.json").read_text())
    assert claims["method"] == "paired bootstrap over valid queries, B=1000, seed=3, 95% percentile interval"
    assert [(c["claim"], c["metric"]) for c in claims["claims"]] == [
        ("dsa > baseline2b", "rank1"), ("dsa > baseline2b", "mAP"),
        ("baseline2b > baseline", "rank1"), ("baseline2b > baseline", "mAP")]
    mAP = claims["claims"][1]
    assert set(mAP) == {"claim", "source", "metric", "delta", "ci95", "verdict"}
    assert (mAP["source"], mAP["delta"], mAP["ci95"], mAP["verdict"]) == ("DSA Table 3", 10.0, [10.0, 10.0], "holds")
    assert claims["claims"][0]["verdict"] == "inconclusive"  # every query a rank-1 hit in both
    assert "Cross-dataset" not in summary  # a run without cross-dataset metrics

    labels = {"source": {"dataset": "synthetic", "root": "w"}, "target": {"dataset": "dukemtmc", "root": "d"}}
    for i, m in enumerate(["pretrained", *models]):
        Path("metrics/cross").mkdir(exist_ok=True)
        scores = {**SCORES, "rank1_pct": 100.0, "mAP_pct": 40.0 + i}  # as the per-query file below says
        Path(f"metrics/cross/{m}.json").write_text(json.dumps({**labels, **scores}))
        write_query_file(f"data/target/eval/{m}/per_query.parquet", query_table(np.full(50, 0.4 + 0.01 * i)))
    stage.main(REPORT_ARGS)
    summary = Path("metrics/summary.md").read_text()
    assert "## Cross-dataset: `synthetic` (w) → `dukemtmc` (d)" in summary
    assert table_row(summary.split("## Cross-dataset")[1], "`dsa`")[:5] == [
        "`dsa`", "62.0", "50.0", "100.0 [100.0, 100.0]", "43.0 [43.0, 43.0]"]
    assert table_row(summary.split("## Cross-dataset")[1], "pretrained trunk, no fine-tuning")[1] == "5.0"
    Path("metrics/cross/dsa.json").unlink()
    with pytest.raises(FileNotFoundError, match="no cross-dataset metrics of dsa"):
        stage.main(REPORT_ARGS)
    for m in ["pretrained", *models[:2]]:
        Path(f"metrics/cross/{m}.json").unlink()

    Path("data/models/dsa/model.json").rename("dsa.json")
    with pytest.raises(FileNotFoundError, match="data/models/dsa/model.json"):
        stage.main(REPORT_ARGS)
    Path("dsa.json").rename("data/models/dsa/model.json")
    Path("data/eval/dsa/per_query.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="data/eval/dsa/per_query.parquet"):
        stage.main(REPORT_ARGS)
    params["report"]["bootstrap"] = 100
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="bootstrap must be >= 1000"):
        stage.main(REPORT_ARGS)

    Path("params.yaml").write_text(yaml.safe_dump({"report": {"models": ["resnet"]}, "prepare": {"dataset": "x"},
                                                   "densepose": {"backend": "oracle"}}))
    with pytest.raises(ValueError, match="unknown models"):
        stage.main(REPORT_ARGS)


def test_query_file_round_trip_and_errors(tmp_path):
    table = query_table(np.array([0.5, np.nan]), first_hit=[0, -1], valid=np.array([True, False]))
    write_query_file(tmp_path / "pq.parquet", table)
    back = read_query_table(tmp_path / "pq.parquet")
    assert back.image_id.tolist() == ["q0000", "q0001"] and back.valid.tolist() == [True, False]
    np.testing.assert_array_equal(back.ap, table.ap)
    np.testing.assert_array_equal(back.first_hit, [0, -1])
    write_parquet_atomic(tmp_path / "bad.parquet", pa.table({"image_id": ["a"], "ap": [1.0]}))
    with pytest.raises(ValueError, match="bad.parquet: lacks column.*valid, first_hit"):
        read_query_table(tmp_path / "bad.parquet")
