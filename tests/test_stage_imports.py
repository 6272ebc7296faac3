"""Stages that run no network start without torch (seconds to import): importing them must not load it.

Each check is a fresh interpreter, since this test process has torch loaded already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reid.device import GPU_DRIVER_FILES

ROOT = Path(__file__).resolve().parents[1]

NO_TORCH = ("synthesize", "locate", "prepare", "prepare_target", "dsap", "evaluate", "report", "profile", "study")
# why each other stage loads torch at import: it runs or trains a network
TORCH = {"densepose": "runs the DensePose estimator", "texture": "runs SAN-PG", "features": "runs the reID model",
         "cross_evaluate": "runs the reID model",
         "train": "trains", "train_sanpg": "trains", "train_densepose": "trains", "pretrain": "trains"}


def test_every_stage_is_classified():
    stages = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__", "common"}
    assert stages == set(NO_TORCH) | set(TORCH), "classify new stages in NO_TORCH or TORCH"


@pytest.mark.parametrize("stage", NO_TORCH)
def test_stage_imports_without_torch(stage):
    code = (f"import sys, stages.{stage}; "
            "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"stages.{stage} imports {proc.stderr.strip().splitlines()[-1]}"


@pytest.mark.skipif(any(map(os.path.exists, GPU_DRIVER_FILES)), reason="a GPU driver is present: auto asks torch")
def test_evaluation_on_a_machine_without_gpu_runs_without_torch():
    # device auto (the default): the exact, top-k and re-ranked paths stay in numpy, torch never loads
    code = ("import sys, numpy as np; from reid.evaluation import RerankConfig, evaluate_features; "
            "rng = np.random.default_rng(0); q, g = rng.normal(size=(6, 8)), rng.normal(size=(30, 8)); "
            "qp, gp = np.arange(6) % 3, np.arange(30) % 3; qc, gc = np.zeros(6, int), np.ones(30, int); "
            "[evaluate_features(q, g, qp, gp, qc, gc, max_rank=5, device='auto', **kw) for kw in "
            "({}, {'top_k': 10}, {'rerank_cfg': RerankConfig(enabled=True, k1=4, k2=2)})]; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]
