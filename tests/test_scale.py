"""bench/scale.py's pieces: the per-stage measurement, the plan, output bytes, growth exponents, the
replicated MSMT17-sized manifest and the merged table (the sizes themselves run for hours: README)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import scale  # noqa: E402

from reid.data.datasets import read_custom  # noqa: E402
from reid.io import write_image  # noqa: E402


def test_measure_reports_the_process_trees_peak_memory_and_cpu(tmp_path) -> None:
    # a child of the measured process allocates 200 MB: the tree's peak counts it
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'x = bytearray(200 * 2**20); x[::4096] = b\"1\" * len(x[::4096])'])"
    row = scale.measure([sys.executable, "-c", code], tmp_path)
    assert row["returncode"] == 0 and row["peak_rss_mb"] >= 200 and row["wall_s"] > 0 and row["cpu_s"] >= 0
    assert scale.measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)["returncode"] == 3


def test_plan_out_bytes_and_growth() -> None:
    dot = 'strict digraph {\n"train@dsa";\n"prepare";\n"dsap";\n"evaluate";\n"prepare" -> "dsap";\n"dsap" -> "train@dsa";\n}\n'
    assert scale.stage_order(dot) == ["evaluate", "prepare", "dsap", "train@dsa"]
    lock = {"stages": {"dsap": {"outs": [{"path": "data/dsap.parquet", "size": 100}, {"path": "d", "size": 20, "nfiles": 2}]}}}
    assert scale.stage_out_bytes(lock, "dsap") == 120 and scale.stage_out_bytes(lock, "missing") == 0
    a = {"crops": 1000, "row": {"wall_s": 10.0, "cpu_s": 0.0, "peak_rss_mb": 100.0, "out_bytes": 1000}}
    b = {"crops": 4000, "row": {"wall_s": 40.0, "cpu_s": 5.0, "peak_rss_mb": 100.0, "out_bytes": 16000}}
    assert scale.growth(a, b) == {"wall_s": 1.0, "cpu_s": None, "peak_rss_mb": 0.0, "out_bytes": 2.0}


def test_the_replicated_manifest_has_the_counts_and_new_identities(tmp_path) -> None:
    crops = []
    for k, (pid, cam, split) in enumerate([(1, 0, "train"), (1, 1, "train"), (2, 0, "query"), (2, 1, "gallery"),
                                           (0, 2, "gallery"), (-1, 0, "gallery")]):
        path = tmp_path / "src" / f"{k}.jpg"
        write_image(path, np.full((16, 8, 3), 10 * k, np.uint8))
        crops.append((str(path), pid, cam, split))
    manifest = scale.replicated_manifest(crops, {"train": 5, "query": 2, "gallery": 7}, tmp_path / "big")
    rows = read_custom(manifest).rows
    assert [sum(r.record.split == s for r in rows) for s in ("train", "query", "gallery")] == [5, 2, 7]
    query_pids = {r.record.pid for r in rows if r.record.split == "query"}
    assert query_pids == {2, 5}  # the second round: a new identity (pid + 3), its gallery crop too
    assert query_pids <= {r.record.pid for r in rows if r.record.split == "gallery"}
    assert {r.record.pid for r in rows if r.record.split == "gallery"} >= {0, -1}  # distractors and junk stay
    with pytest.raises(ValueError, match="no query crops"):
        scale.replicated_manifest(crops[:2], {"query": 1}, tmp_path / "none")


def test_the_table_merges_sizes_with_growth_exponents(tmp_path) -> None:
    def size_file(name: str, crops: int, wall: float) -> Path:
        row = {"wall_s": wall, "cpu_s": wall, "peak_rss_mb": 500.0, "out_bytes": crops * 10, "returncode": 0}
        path = tmp_path / f"scale_{name}.json"
        path.write_text(json.dumps({"size": name, "crops": crops, "stages": {"dsap": row, "train@dsa": {**row, "returncode": 1}}}))
        return path
    out = tmp_path / "scale.json"
    scale.main(["table", str(size_file("market", 32000, 80.0)), str(size_file("default", 8000, 20.0)), "--out", str(out)])
    table = json.loads(out.read_text())
    assert table["sizes"]["market"]["crops"] == 32000 and set(table["sizes"]["default"]["stages"]) == {"dsap"}
    assert table["growth"]["dsap"]["default->market"] == {"wall_s": 1.0, "cpu_s": 1.0, "peak_rss_mb": 0.0, "out_bytes": 1.0}
