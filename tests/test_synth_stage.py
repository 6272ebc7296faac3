"""The synthesize stage: params -> both exported folders and the contact sheet, on a micro profile."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from reid.io import read_image

MICRO = {"synthesize": {
    "world": {"seed": 1, "n_train": 2, "n_test": 3, "n_cameras": 3, "cameras_per_identity": [2, 2],
              "images_per_identity": 4, "n_distractors": 2, "n_junk": 2, "height": 64, "width": 32, "tile": 8},
    "pit": {"seed": 1, "n_textures": 2, "poses_per_texture": 2, "height": 64, "width": 32, "tile": 8},
}}


def _run(tmp_path: Path, params: dict, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "stages.synthesize", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_stage_writes_market_pit_and_contact_sheet(tmp_path):
    done = _run(tmp_path, MICRO, "market", "--out", "data/synth/market", "--sheet", "data/synth/contact_sheet.png")
    assert done.returncode == 0, done.stderr
    done = _run(tmp_path, MICRO, "pit", "--out", "data/synth/pit")  # MICRO has no synthesize.pretrain (test_pretrain)
    assert done.returncode == 0, done.stderr
    synth = tmp_path / "data" / "synth"
    assert sorted(p.name for p in synth.iterdir()) == ["contact_sheet.png", "market", "pit"]
    assert len(list((synth / "market" / "query").glob("*.jpg"))) == 3 * 2
    assert len(list((synth / "pit" / "images").glob("*.png"))) == 4
    sheet = read_image(synth / "contact_sheet.png")
    assert sheet.shape[0] > 64 and sheet.shape[1] > 32 * 5


def test_stage_names_a_bad_parameter(tmp_path):
    bad = {"synthesize": {**MICRO["synthesize"], "world": {**MICRO["synthesize"]["world"], "n_cameras": 1}}}
    done = _run(tmp_path, bad, "market", "--out", "data/synth/market", "--sheet", "data/synth/contact_sheet.png")
    assert done.returncode != 0 and "synthesize.world" in done.stderr and "n_cameras" in done.stderr
    assert not (tmp_path / "data" / "synth" / "market").exists()
