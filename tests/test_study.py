"""Seed study: the aggregation (reid.study), the driver's command lines and queue parsing
(reid.study, entry point stages.study), and one real run of the driver on a scratch git + DVC repository."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reid import study as driver
from reid.study import aggregate_claims, study_document, study_markdown, summarize
from stages import study as entry


def _claims(delta_r1: float, delta_map: float, verdict_r1: str, verdict_map: str) -> dict:
    return {"method": "paired bootstrap", "claims": [
        {"claim": "dsa > baseline2b", "source": "DSA Table 3", "metric": "rank1", "delta": delta_r1,
         "ci95": [delta_r1 - 2, delta_r1 + 2], "verdict": verdict_r1},
        {"claim": "dsa > baseline2b", "source": "DSA Table 3", "metric": "mAP", "delta": delta_map,
         "ci95": [delta_map - 1, delta_map + 1], "verdict": verdict_map}]}


def _metrics(r1: float, mAP: float, minp: float) -> dict:
    return {"rank1_pct": r1, "mAP_pct": mAP, "mINP_pct": minp, "n_query_valid": 253}


@pytest.fixture
def three_seeds() -> dict:
    model_metrics = [
        {"baseline2b": _metrics(18.0, 24.0, 15.0), "dsa": _metrics(15.0, 20.0, 12.0), "pretrained": _metrics(3, 2, 1)},
        {"baseline2b": _metrics(20.0, 25.0, 16.0), "dsa": _metrics(17.0, 21.0, 12.5), "pretrained": _metrics(3, 2, 1)},
        {"baseline2b": _metrics(19.0, 26.0, 17.0), "dsa": _metrics(22.0, 22.0, 13.0), "pretrained": _metrics(3, 2, 1)},
    ]
    claims = [_claims(-3.0, -4.0, "reversed", "reversed"), _claims(-3.0, -4.0, "inconclusive", "reversed"),
              _claims(3.0, -4.0, "holds", "reversed")]
    return study_document([0, 1, 2], {0: "study-seed0-t", 1: "study-seed1-t", 2: "study-seed2-t"},
                          model_metrics, claims, baseline="abc")


def test_summarize_mean_and_sample_sd():
    s = summarize([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3, abs=1e-4)
    assert s["sd"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]), abs=1e-4)  # ddof = 1
    assert s["sd"] == pytest.approx(1.5275, abs=1e-4)
    assert s["n"] == 3 and s["values"] == [1.0, 2.0, 4.0]
    one = summarize([5.0, None])
    assert one == {"values": [5.0, None], "mean": 5.0, "sd": None, "n": 1}
    assert summarize([None]) == {"values": [None], "mean": None, "sd": None, "n": 0}


def test_study_document_models(three_seeds):
    doc = three_seeds
    assert doc["seeds"] == [0, 1, 2]
    assert doc["experiments"] == {"0": "study-seed0-t", "1": "study-seed1-t", "2": "study-seed2-t"}
    assert doc["baseline"] == "abc"
    assert list(doc["models"]) == ["baseline2b", "dsa"]  # pretrained is seed-independent: left out
    b2 = doc["models"]["baseline2b"]
    assert set(b2) == {"rank1_pct", "map_pct", "minp_pct"}
    assert b2["rank1_pct"]["values"] == [18.0, 20.0, 19.0]
    assert b2["rank1_pct"]["mean"] == 19.0 and b2["rank1_pct"]["sd"] == 1.0
    assert b2["map_pct"]["mean"] == 25.0 and b2["map_pct"]["sd"] == 1.0
    dsa = doc["models"]["dsa"]["rank1_pct"]
    assert dsa["mean"] == 18.0 and dsa["sd"] == pytest.approx(statistics.stdev([15, 17, 22]), abs=1e-4)
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN


def test_study_document_claims(three_seeds):
    claims = three_seeds["claims"]
    assert list(claims) == ["dsa > baseline2b"]
    r1 = claims["dsa > baseline2b"]["rank1"]
    assert r1["delta"] == [-3.0, -3.0, 3.0]
    assert r1["verdicts"] == ["reversed", "inconclusive", "holds"]
    assert r1["mean_delta"] == -1.0 and r1["n_holds"] == 1
    m = claims["dsa > baseline2b"]["mAP"]
    assert m["verdicts"] == ["reversed"] * 3 and m["mean_delta"] == -4.0 and m["sd_delta"] == 0.0


def test_claims_missing_in_one_seed():
    out = aggregate_claims([_claims(1.0, 2.0, "holds", "holds"), None,
                            {"method": "x", "claims": [{"claim": "san > baseline", "metric": "rank1", "delta": 0.5,
                                                        "ci95": [-1, 2], "verdict": "inconclusive"}]}])
    assert out["dsa > baseline2b"]["rank1"]["delta"] == [1.0, None, None]
    assert out["dsa > baseline2b"]["rank1"]["verdicts"] == ["holds", None, None]
    assert out["dsa > baseline2b"]["rank1"]["mean_delta"] == 1.0
    assert out["san > baseline"]["rank1"]["verdicts"] == [None, None, "inconclusive"]


def test_study_document_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        study_document([0, 1], {0: "a", 1: "b"}, [{}], [None, None])
    with pytest.raises(ValueError):
        study_document([0, 0], {0: "a"}, [{}, {}], [None, None])


def test_study_markdown(three_seeds):
    md = study_markdown(three_seeds)
    assert "| model | Rank-1 mean ± sd | mAP mean ± sd |" in md
    assert "| `baseline2b` | 19.0 ± 1.0 | 25.0 ± 1.0 |" in md
    assert "| `dsa` | 18.0 ± 3.6 | 21.0 ± 1.0 |" in md
    assert "pretrained" not in md
    assert "| dsa > baseline2b | rank1 | -3.0, -3.0, +3.0 | -1.0 | reversed, inconclusive, holds |" in md
    assert "| dsa > baseline2b | mAP | -4.0, -4.0, -4.0 | -4.0 | reversed, reversed, reversed |" in md
    single = study_markdown(study_document([7], {7: "e"}, [{"baseline": _metrics(10, 20, 5)}], [None]))
    assert "| `baseline` | 10.0 | 20.0 |" in single and "claim" not in single  # no sd from one seed


def test_command_lines():
    assert driver.exp_name(3, "20260101-000000") == "study-seed3-20260101-000000"
    assert driver.queue_commands([0, 2], "t", dvc="/v/dvc") == [
        ["/v/dvc", "exp", "run", "--queue", "-S", "train.seed=0", "-n", "study-seed0-t"],
        ["/v/dvc", "exp", "run", "--queue", "-S", "train.seed=2", "-n", "study-seed2-t"]]
    assert driver.start_command("dvc") == ["dvc", "queue", "start", "-j", "1"]
    assert driver.status_command() == ["dvc", "queue", "status"]
    assert driver.logs_command("study-seed0-t") == ["dvc", "queue", "logs", "study-seed0-t"]
    assert driver.default_tag(driver.dt.datetime(2026, 12, 2, 3, 4, 5)) == "20261202-030405"
    for bad in ("a b", "x..y", "a/b", "-x", "x.lock", ""):
        with pytest.raises(ValueError):
            driver.exp_name(0, bad)


def test_main_rejects_repeated_seeds():
    with pytest.raises(SystemExit):
        entry.main(["--dry-run", "1", "1"])


def test_dry_run_prints_commands(capsys):
    assert entry.main(["--dry-run", "--tag", "t", "--dvc", "dvc", "5", "6"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dvc exp run --queue -S train.seed=5 -n study-seed5-t",
        "dvc exp run --queue -S train.seed=6 -n study-seed6-t",
        "dvc queue start -j 1"]


QUEUE_STATUS = """\
Task     Name                   Created       Status
626b627  study-seed0-t          02:16 AM      Queued
0f3c2e4  study-seed1-t          02:12 AM      Running
dd110bf                         02:16 AM      Queued
2522a6f  old-exp                Dec 01, 2026  Failed
2991629  study-seed0-x          02:15 AM      Success

Worker status: 1 active, 0 idle
"""


def test_parse_queue_status():
    st = driver.parse_queue_status(QUEUE_STATUS)
    assert st.tasks == {"study-seed0-t": "Queued", "study-seed1-t": "Running", "old-exp": "Failed",
                        "study-seed0-x": "Success"}
    assert (st.active, st.idle, st.workers) == (1, 0, 1)
    empty = driver.parse_queue_status("No experiment tasks in the queue.\n\nWorker status: 0 active, 0 idle\n")
    assert empty.tasks == {} and empty.workers == 0


def test_exp_refs():
    text = ("df656178a67b41d8504c22762f759e3eca1c5f8a refs/exps/c0/ca3bf2c9bb6526f434ea9dc3e8539de768ae8d/study-seed0-t\n"
            "0f3c2e45823c13138403165b767c2670dc8c92ae refs/exps/celery/failed\n"
            "1111111111111111111111111111111111111111 refs/exps/exec/EXEC_BASELINE\n")
    assert driver.exp_refs(text) == {"study-seed0-t": ["df656178a67b41d8504c22762f759e3eca1c5f8a"]}


class FakeRunner:
    """Stands in for driver.Dvc: replays `dvc queue status` texts, records commands."""

    dvc = "dvc"

    def __init__(self, statuses: list[str], refs: dict[str, list[str]] | None = None):
        self.statuses, self._refs, self.commands, self.lines = statuses, refs or {}, [], []

    def echo(self, text: str) -> None:
        self.lines.append(text)

    def queue_status(self):
        return driver.parse_queue_status(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])

    def refs(self):
        return self._refs

    def run(self, cmd, **_):
        self.commands.append(cmd)


def _status(rows: dict[str, str], workers: str = "1 active, 0 idle") -> str:
    return "".join(f"abcdef1  {n}  02:16 AM  {s}\n" for n, s in rows.items()) + f"\nWorker status: {workers}\n"


def test_wait_for_until_done():
    runner = FakeRunner([_status({"a": "Queued", "b": "Queued"}), _status({"a": "Running", "b": "Queued"}),
                         _status({"a": "Success", "b": "Running"}), _status({"a": "Success", "b": "Failed"})])
    final = driver.wait_for(runner, ["a", "b"], poll_s=0, stall_s=60, jobs=1, sleep=lambda s: None)
    assert final == {"a": "Success", "b": "Failed"}
    assert any(line.endswith("a: Running") for line in runner.lines)
    assert runner.commands == []


def test_wait_for_name_gone_from_queue_but_ref_exists():
    runner = FakeRunner(["No experiment tasks in the queue.\n\nWorker status: 0 active, 0 idle\n"], refs={"a": ["1" * 40]})
    assert driver.wait_for(runner, ["a"], poll_s=0, stall_s=60, jobs=1, sleep=lambda s: None) == {"a": "Success"}


def test_wait_for_restarts_a_missing_worker_then_gives_up(monkeypatch):
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(driver.time, "monotonic", lambda: next(clock))
    runner = FakeRunner([_status({"a": "Queued"}, workers="0 active, 0 idle")])
    with pytest.raises(driver.StudyError, match="no queue worker"):
        driver.wait_for(runner, ["a"], poll_s=0, stall_s=100, jobs=1, max_restarts=2, sleep=lambda s: None)
    assert runner.commands == [["dvc", "queue", "start", "-j", "1"]] * 2


# ---- end to end: the driver on a scratch git + DVC repository ------------------------------------

PREP = """\
import os
os.makedirs("data", exist_ok=True)
open("data/prep.txt", "w").write("upstream\\n")
with open(os.environ.get("STUDY_COUNTER", "/dev/null"), "a") as f:
    f.write("prep\\n")
"""
TRAIN = """\
import json, os, re
seed = int(re.search(r"seed: *(-?\\d+)", open("params.yaml").read()).group(1))
if seed == 99:
    raise SystemExit("seed 99 fails on purpose")
os.makedirs("metrics", exist_ok=True)
for model, off in (("baseline", 0.0), ("dsa", 1.0)):
    json.dump({"rank1_pct": 10.0 + seed + off, "mAP_pct": 20.0 + 2 * seed + off, "mINP_pct": 5.0},
              open(f"metrics/{model}.json", "w"))
json.dump({"method": "test", "claims": [{"claim": "dsa > baseline", "source": "t", "metric": "rank1",
           "delta": 1.0 - seed, "ci95": [-1.0, 2.0], "verdict": "holds" if seed == 0 else "inconclusive"}]},
          open("metrics/claims.json", "w"))
"""
DVC_YAML = """\
stages:
  prep:
    cmd: python prep.py
    deps:
      - prep.py
    params:
      - prep.n
    outs:
      - data/prep.txt
  train:
    cmd: python train.py
    deps:
      - train.py
      - data/prep.txt
    params:
      - train.seed
    outs:
      - metrics/baseline.json:
          cache: false
      - metrics/dsa.json:
          cache: false
      - metrics/claims.json:
          cache: false
"""
PARAMS = "prep:\n  n: 3\ntrain:\n  seed: 0\nreport:\n  models:\n    - baseline\n    - dsa\n    - pretrained\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_dirty_work_tree_is_refused_or_recorded(tmp_path):
    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)

    sh("git", "init", "-q")
    (tmp_path / "train.py").write_text("lr = 1\n")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    runner = driver.Dvc(tmp_path, "dvc", echo=lambda _: None)
    (tmp_path / "notes.txt").write_text("untracked: not in the experiments, not dirty\n")
    assert driver.work_tree_state(runner, allow_dirty=False) == {"dirty": False}
    (tmp_path / "train.py").write_text("lr = 2\n")
    with pytest.raises(driver.StudyError, match=r"uncommitted changes(.|\n)*--allow-dirty(.|\n)*M train.py"):
        driver.work_tree_state(runner, allow_dirty=False)
    state = driver.work_tree_state(runner, allow_dirty=True)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert state == {"dirty": True, "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_driver_end_to_end(tmp_path, monkeypatch):
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.is_file():
        pytest.skip("dvc is not installed beside this python")
    repo = tmp_path / "repo"
    repo.mkdir()
    counter = tmp_path / "counter.txt"
    # The queue worker runs `python` from PATH: this interpreter's.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("STUDY_COUNTER", str(counter))

    def sh(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "study@example.com")
    sh("git", "config", "user.name", "study test")
    sh(str(dvc), "init", "-q")
    sh(str(dvc), "config", "core.check_update", "false")
    (repo / "prep.py").write_text(PREP)
    (repo / "train.py").write_text(TRAIN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(PARAMS)
    sh(str(dvc), "repro", "-q")  # the baseline: upstream output in the DVC cache, metrics committed
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    assert counter.read_text() == "prep\n"

    lines: list[str] = []
    start = time.monotonic()
    doc = driver.run_study([0, 1], repo=repo, tag="t1", dvc=str(dvc), poll_s=1.0, stall_s=60, echo=lines.append)
    elapsed = time.monotonic() - start
    print(f"end-to-end study of 2 seeds: {elapsed:.1f} s")

    assert counter.read_text() == "prep\n"  # upstream reused, never re-run in the experiments
    assert doc["seeds"] == [0, 1] and doc["dirty"] is False
    assert doc["experiments"] == {"0": "study-seed0-t1", "1": "study-seed1-t1"}
    assert doc["models"]["baseline"]["rank1_pct"]["values"] == [10.0, 11.0]
    assert doc["models"]["dsa"]["map_pct"]["values"] == [21.0, 23.0]
    assert doc["models"]["dsa"]["map_pct"]["sd"] == pytest.approx(1.4142, abs=1e-4)
    assert list(doc["models"]) == ["baseline", "dsa"]
    assert doc["claims"]["dsa > baseline"]["rank1"] == {
        "delta": [1.0, 0.0], "verdicts": ["holds", "inconclusive"], "mean_delta": 0.5, "sd_delta": 0.7071,
        "n_holds": 1}
    assert json.loads((repo / "metrics/study.json").read_text()) == doc
    assert "| `dsa` | 11.5 ± 0.7 | 22.0 ± 1.4 |" in (repo / "metrics/study.md").read_text()
    # The workspace is untouched: params, lock and metrics as committed; only the study files are new.
    assert sh("git", "status", "--porcelain").splitlines() == ["?? metrics/study.json", "?? metrics/study.md"]
    assert any("study-seed1-t1: Success" in line for line in lines)

    # --resume: nothing queued, the same experiments collected again.
    assert driver.run_study([0, 1], repo=repo, tag="t1", resume=True, dvc=str(dvc), poll_s=1.0,
                            echo=lines.append) == doc
    # Same names again: refused before anything is queued.
    with pytest.raises(driver.StudyError, match="exist already"):
        driver.run_study([0], repo=repo, tag="t1", dvc=str(dvc), echo=lines.append)
    # A failing seed: named, with its log hint; the earlier study files stay as they were.
    with pytest.raises(driver.StudyError, match=r"study-seed99-t2 \(see `dvc queue logs study-seed99-t2`\)"):
        driver.run_study([99], repo=repo, tag="t2", dvc=str(dvc), poll_s=1.0, stall_s=60, echo=lines.append)
    assert json.loads((repo / "metrics/study.json").read_text()) == doc
    assert "seed 99 fails on purpose" in sh(str(dvc), "queue", "logs", "study-seed99-t2")
