"""The report: summary table from metrics files, the papers' orderings, the figure sheet, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from reid.evaluation import write_cmc
from reid.io import read_image, write_image
from reid.report import (
    ModelResult,
    claims_table,
    figure_sheet,
    load_model_result,
    paper_table,
    read_cmc,
    summary_markdown,
)

SCORES = {"rank1_pct": 60.0, "rank5_pct": 80.0, "rank10_pct": 90.0, "mAP_pct": 50.0, "mINP_pct": 30.0,
          "mAP_official_pct": 48.0, "n_query_valid": 12}


def result(name: str, rank1: float, mAP: float) -> ModelResult:
    return ModelResult(name, {**SCORES, "rank1_pct": rank1, "mAP_pct": mAP}, {"train_time_s": 12.3, "images_per_s": 40})


def table_row(text: str, first_cell: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_claims_are_judged_on_both_rank1_and_map():
    text = claims_table([result("baseline", 60, 50), result("baseline2b", 61, 49), result("dsa", 65, 55),
                         result("san", 59, 48)])
    assert table_row(text, "`dsa` > `baseline2b`")[2:] == ["+4.0", "+6.0", "yes"]
    assert table_row(text, "`baseline2b` > `baseline`")[2:] == ["+1.0", "-1.0", "mixed"]
    assert table_row(text, "`san` > `baseline`")[2:] == ["-1.0", "-2.0", "no"]
    assert "dsa_san" not in text  # claims about models not in the run are left out


def test_summary_lists_every_model_and_labels_the_papers_numbers_as_another_dataset():
    text = summary_markdown([result("baseline", 60, 50), result("dsa", 65, 55)], "synthetic",
                            densepose={"part_miou": 0.5, "uv_error": 0.07, "found_fraction": 0.98},
                            sanpg={"heldout_l1": 0.3, "heldout_l1_mean_texture": 0.4}, backend="lite")
    assert table_row(text, "`baseline`")[1:7] == ["60.0", "80.0", "90.0", "50.0", "30.0", "48.0"]
    assert table_row(text, "`dsa`")[-2:] == ["12", "40.0"]
    assert "not on `synthetic`" in text and "different dataset" in text
    assert table_row(text, "DSA-reID (CVPR19, Table 2)")[1:3] == ["`dsa`", "95.7 / 87.6"]
    assert "part mIoU 0.500" in text and "`lite` backend" in text and "L1 0.300 vs 0.400" in text
    on_market = summary_markdown([result("baseline", 60, 50)], "market1501")
    assert "on **market1501** itself" in on_market


def test_paper_table_marks_rows_without_our_model():
    text = paper_table(["baseline"])
    assert table_row(text, "DSA Table 3: Baseline (RE+LS)")[1] == "`baseline`"
    assert table_row(text, "SAN (AAAI20)")[1:] == ["—", "96.1 / 88.0", "87.9 / 75.5", "—", "—"]


def test_missing_or_incomplete_metrics_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="baseline.json"):
        load_model_result("baseline", tmp_path)
    (tmp_path / "baseline.json").write_text(json.dumps({"rank1_pct": 1.0}))
    with pytest.raises(ValueError, match=r"baseline.json: lacks rank5_pct"):
        load_model_result("baseline", tmp_path)
    (tmp_path / "baseline.json").write_text("{not json")
    with pytest.raises(ValueError, match="baseline.json: not valid JSON"):
        load_model_result("baseline", tmp_path)


def test_cmc_round_trips_through_the_evaluation_writer(tmp_path):
    write_cmc(tmp_path / "cmc.tsv", np.array([0.5, 0.75, 1.0]))
    ranks, acc = read_cmc(tmp_path / "cmc.tsv")
    assert ranks.tolist() == [1, 2, 3] and acc.tolist() == pytest.approx([50.0, 75.0, 100.0])


def test_figure_sheet_stacks_titled_pictures_at_one_width():
    sheet = figure_sheet([("a", np.zeros((10, 20, 3), np.uint8)), ("b", np.zeros((50, 50, 3), np.uint8))], width=100)
    assert sheet.shape == (28 + 50 + 28 + 100, 100, 3)
    assert (sheet[28:78] == 0).all() and (sheet[:28] > 0).any()


def test_report_stage_writes_summary_and_figures(tmp_path, monkeypatch):
    import stages.report as stage

    monkeypatch.chdir(tmp_path)
    models = ["baseline", "dsa"]
    for i, m in enumerate(models):
        Path("metrics/train").mkdir(parents=True, exist_ok=True)
        Path(f"metrics/{m}.json").write_text(json.dumps({**SCORES, "rank1_pct": 60.0 + i}))
        Path(f"metrics/train/{m}.json").write_text(json.dumps({"train_time_s": 5.0, "images_per_s": 9.0}))
        write_cmc(f"metrics/cmc/{m}.tsv", np.linspace(0.5, 1.0, 20))
        write_image(f"data/eval/{m}/ranked_list.png", np.full((30, 120, 3), 100, np.uint8))
    Path("params.yaml").write_text(yaml.safe_dump({"report": {"models": models}, "prepare": {"dataset": "synthetic"},
                                                   "densepose": {"backend": "oracle"}}))
    stage.main()
    summary = Path("metrics/summary.md").read_text()
    assert table_row(summary, "`dsa`")[1] == "61.0" and "`dsa` > `baseline2b`" not in summary
    assert read_image("data/report/figures.png").shape[1] == 900

    Path("params.yaml").write_text(yaml.safe_dump({"report": {"models": ["resnet"]}, "prepare": {"dataset": "x"},
                                                   "densepose": {"backend": "oracle"}}))
    with pytest.raises(ValueError, match="unknown models"):
        stage.main()
