"""scripts/collect_results.py: a run's metrics copied into a results folder with what identifies the run."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "collect_results.py"
spec = importlib.util.spec_from_file_location("collect_results", SCRIPT)
collect_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_results)


def fake_run(root: Path, report: bool) -> None:
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "baseline.json").write_text(json.dumps({"rank1_pct": 31.0}))
    (root / "metrics" / "densepose.json").write_text("{}")  # not a feature set: never copied
    if report:
        (root / "metrics" / "claims.json").write_text("{}")
        (root / "metrics" / "summary.md").write_text("# summary\n")


@pytest.mark.parametrize("report", [False, True])
def test_collects_feature_set_metrics_and_the_report_when_there_is_one(tmp_path, report):
    fake_run(tmp_path / "run", report)
    copied = collect_results.collect(tmp_path / "run", tmp_path / "out", since=0.0)
    expected = {"metrics/baseline.json"} | ({"claims.json", "summary.md"} if report else set())
    assert set(copied) == expected
    assert json.loads((tmp_path / "out" / "metrics" / "baseline.json").read_text()) == {"rank1_pct": 31.0}


def test_a_run_without_evaluated_metrics_is_an_error(tmp_path):
    (tmp_path / "run" / "metrics").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no feature set evaluated by this run"):
        collect_results.collect(tmp_path / "run", tmp_path / "out", since=0.0)


def test_files_older_than_the_run_are_left_behind(tmp_path):
    fake_run(tmp_path / "run", report=True)
    old = tmp_path / "run" / "metrics" / "summary.md"
    os.utime(old, (1.0, 1.0))  # a committed file of another run
    copied = collect_results.collect(tmp_path / "run", tmp_path / "out", since=100.0)
    assert "summary.md" not in copied and "metrics/baseline.json" in copied


def test_git_state_names_the_commit_and_a_dirty_tree(tmp_path):
    run = lambda *a: subprocess.run(a, cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    run("git", "add", ".")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    (tmp_path / "params.yaml").write_text("a: 2\n")  # the run's own params: not a dirty tree
    state = collect_results.git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert collect_results.git_state(tmp_path)["dirty"] is True
