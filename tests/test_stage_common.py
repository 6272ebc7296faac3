"""stages.common: params sections as typed configs, and `run`, every stage's entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reid.config import ConfigError
from reid.engine.trainer import TrainConfig
from stages.common import PARAMS_FILE, load_config, run

REPO = Path(__file__).resolve().parents[1]


def _run_stage(cwd: Path, params: dict, *args: str) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "REID_PARAMS"}  # the stage reads ./params.yaml
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_load_config_names_the_file_and_the_key():
    with pytest.raises(ConfigError, match=rf"^{PARAMS_FILE}: train: k must be >= 2 \(batch-hard triplet"):
        load_config(TrainConfig, "train", {"train": {"k": 1}})
    with pytest.raises(ConfigError, match=rf"^{PARAMS_FILE}: missing parameter train$"):
        load_config(TrainConfig, "train", {})


def test_run_exits_with_the_status_of_main():
    for status, code in ((None, 0), (0, 0), (3, 3)):
        with pytest.raises(SystemExit) as done:
            run(lambda status=status: status)
        assert done.value.code == code


def test_run_prints_a_config_error_as_one_line(capsys):
    def main() -> None:
        raise ConfigError("params.yaml: train: p must be >= 2")

    with pytest.raises(SystemExit) as done:
        run(main)
    assert done.value.code == 2
    assert capsys.readouterr().err == "error: params.yaml: train: p must be >= 2\n"


def test_run_lets_an_unexpected_error_through():
    def main() -> None:
        raise KeyError("not a parameter problem")

    with pytest.raises(KeyError):
        run(main)


def test_stage_with_a_bad_param_prints_one_line_and_no_traceback(tmp_path):
    done = _run_stage(tmp_path, {"train": {"p": 1}}, "stages.train", "baseline", "--manifest", "m.parquet",
                      "--dsap", "d.parquet", "--texture", "t.parquet", "--out", "model", "--curves", "curves")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: params.yaml: train: p must be >= 2 (batch-hard triplet needs >= 2 identities per batch), got 1"]


def test_stage_with_an_unexpected_error_keeps_its_traceback(tmp_path):
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")  # a pipeline output gone bad: not the user's input
    done = _run_stage(tmp_path, {"dsap": {"grid": 4}}, "stages.dsap", "--manifest", "manifest.parquet",
                      "--iuv", "iuv.parquet", "--out", "dsap.parquet", "--samples", "s.png",
                      "--metrics", "dsap.json")  # valid params
    assert done.returncode not in (0, 2)
    assert "Traceback" in done.stderr and "manifest" in done.stderr


def test_a_bad_manifest_row_is_reported_without_a_traceback(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,pid,camid,split\na.jpg,seven,0,train\n")
    done = _run_stage(tmp_path, {"prepare": {"dataset": "custom", "root": "manifest.csv", "num_workers": 1}},
                      "stages.prepare", "--manifest", "m.parquet", "--rejects", "r.txt", "--digest", "d.txt")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
    assert "line 2, column pid" in done.stderr
    assert not (tmp_path / "m.parquet").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the errors of a machine without CUDA")
@pytest.mark.parametrize("change, message", [
    ({"amp": "fp16"}, "train: amp=fp16 needs CUDA (device 'auto' is cpu here); on the CPU use amp=bf16 or off"),
    ({"device": "cuda"}, "train: device='cuda' was requested but CUDA is not available"),
])
def test_a_device_setting_the_machine_cannot_run_is_a_bad_parameter(tmp_path, monkeypatch, capsys, change, message):
    import stages.train as stage  # in process: the subprocess path of `run` is tested above

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": change}))
    with pytest.raises(SystemExit) as done:
        run(lambda: stage.main(["baseline", "--manifest", "m.parquet", "--dsap", "d.parquet", "--texture",
                                "t.parquet", "--out", "model", "--curves", "curves"]))
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: params.yaml: {message}"]
