"""End-to-end: the whole DVC pipeline on the micro profile, in a throw-away copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("baseline", "baseline2b", "dsa")
COPIED = ("reid", "stages", "profiles", "dvc.yaml", ".dvc/config", ".dvcignore")

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the project on the micro profile, after one full `dvc repro`."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "stages.profile", "micro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "micro"], repo)
    run(["dvc", "repro"], repo)
    return repo


def test_repro_writes_every_output(repo):
    for name in MODELS:
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert 0.0 <= metrics["mAP_pct"] <= 100.0
        assert 0.0 <= metrics["rank1_pct"] <= 100.0
        assert metrics["n_query_valid"] > 0
        assert (repo / "metrics" / "cmc" / f"{name}.tsv").is_file()
        assert (repo / "data" / "eval" / name / "ranked_list.png").is_file()
        assert json.loads((repo / "metrics" / "train" / f"{name}.json").read_text())["epochs"] == 2
    densepose = json.loads((repo / "metrics" / "densepose.json").read_text())
    assert 0.0 < densepose["found_fraction"] <= 1.0
    for picture in ("synth/contact_sheet.png", "dsap_samples.png"):
        assert (repo / "data" / picture).stat().st_size > 0


def test_second_repro_does_nothing(repo):
    out = run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)


def test_training_knob_dirties_only_training_and_downstream(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] * 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(run(["dvc", "status", "--json"], repo))
    finally:
        run(["git", "checkout", "params.yaml"], repo)
    dirty = {stage.split(":")[-1] for stage in status}
    expected = {f"{stage}@{m}" for stage in ("train", "features", "evaluate") for m in MODELS}
    assert {s for s in dirty if s.startswith("train@")} == {f"train@{m}" for m in MODELS}
    assert dirty <= expected
    assert not dirty & {"synthesize", "prepare", "train_densepose", "densepose", "dsap"}
