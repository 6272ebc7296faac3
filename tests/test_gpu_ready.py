"""bench/gpu_ready.py on the CPU with --tiny: every stage runs and reports a rate, so the script is known
to work before a GPU is lent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.mark.slow
def test_the_tiny_run_reports_every_stage(tmp_path, capsys) -> None:
    import gpu_ready

    out = tmp_path / "ready.json"
    result = gpu_ready.main(["--tiny", "--device", "cpu", "--models", "baseline", "dsa_san", "--out", str(out)])
    assert json.loads(out.read_text()) == result and result["device"] == "cpu"
    stages = result["stages"]
    assert list(stages) == ["densepose", "dsap", "texture", "loader", "train@baseline", "train@dsa_san",
                            "features", "search"]
    for name in ("densepose", "dsap", "texture", "features"):
        assert stages[name]["crops_per_s"] > 0, name
    assert stages["loader"]["samples_per_s"] > 0
    assert all(stages[f"train@{m}"]["images_per_s"] > 0 for m in ("baseline", "dsa_san"))
    assert stages["search"]["seconds"] > 0 and stages["search"]["queries"] == 3368 // 64
    printed = capsys.readouterr().out
    assert "train@dsa_san" in printed and "gpu_ready on cpu" in printed
