"""stages.locate: a missing dataset root stops the pipeline with one line naming the parameter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reid.config import ConfigError
from stages import locate

ROOT = Path(__file__).resolve().parents[1]


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize("section", ["prepare", "target"])
def test_a_missing_root_is_one_line_naming_the_parameter_and_exit_2(tmp_path, section):
    write_params(tmp_path, {section: {"dataset": "custom", "root": "mydata/manifest.csv", "num_workers": 1}})
    done = subprocess.run([sys.executable, "-m", "stages.locate", section, "--out", "data/located/x.json"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: params.yaml: {section}.root: mydata/manifest.csv not found (the custom dataset's folder or manifest; "
        f"e.g. {locate.EXAMPLES[section]})"]
    assert not (tmp_path / "data").exists()


def test_an_existing_root_writes_its_receipt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "market").mkdir()
    write_params(tmp_path, {"target": {"dataset": "market1501", "root": "market", "num_workers": 3}})
    locate.main(["target", "--out", "data/located/target.json"])
    assert json.loads(Path("data/located/target.json").read_text()) == {"dataset": "market1501", "root": "market"}


def test_a_synthetic_root_is_left_to_the_synthesize_stages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"prepare": {"dataset": "synthetic", "root": "data/synth/market"}})
    locate.main(["prepare", "--out", "data/located/prepare.json"])  # not built yet: DVC builds it first
    assert json.loads(Path("data/located/prepare.json").read_text())["root"] == "data/synth/market"


def test_it_checks_only_the_keys_it_declares(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.csv").write_text("path,pid,camid,split\n")
    write_params(tmp_path, {"prepare": {"dataset": "custom", "root": "m.csv", "num_workers": 0}})
    locate.main(["prepare", "--out", "p.json"])  # num_workers is prepare's to check
    write_params(tmp_path, {"prepare": {"dataset": "market", "root": "m.csv"}})
    with pytest.raises(ConfigError, match="prepare.dataset: 'market' is not one of"):
        locate.main(["prepare", "--out", "p.json"])
