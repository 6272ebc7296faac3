""".dvcignore: a temporary file that a killed write leaves in a `persist: true` output folder is never
hashed or cached by DVC (checked in a scratch git + DVC repository with the project's .dvcignore)."""

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

pytestmark = pytest.mark.slow

# The stage's first run writes last.pt, then is SIGKILLed in the middle of saving another file; the
# next run writes last.pt only and succeeds. (A write of the same file deletes what a killed one left,
# reid.io.atomic_path; the other file's partial copy stays:) the .dvcignore pattern alone must keep it
# out of DVC.
SAVE = """\
import os, signal
from pathlib import Path
from reid.io import atomic_path, write_bytes_atomic

target = Path("checkpoint/last.pt")
killed_before = target.exists()
write_bytes_atomic(target, b"epoch 1")
if not killed_before:
    with atomic_path(target.with_name("best.pt")) as tmp:
        tmp.write_bytes(b"JUNK" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def test_a_killed_save_in_a_persisted_folder_is_not_cached(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    dvc("init", "-q", cwd=tmp_path)
    dvc("config", "core.check_update", "false", cwd=tmp_path)
    shutil.copy2(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    (tmp_path / "save.py").write_text(SAVE)
    stage = {"cmd": f"{sys.executable} save.py", "deps": ["save.py"], "outs": [{"checkpoint": {"persist": True}}]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))

    assert dvc("repro", cwd=tmp_path, check=False).returncode != 0  # killed mid-save
    temps = [p.name for p in (tmp_path / "checkpoint").iterdir() if p.name != "last.pt"]
    assert len(temps) == 1 and temps[0].startswith(".best.pt.") and temps[0].endswith(".tmp")

    dvc("repro", cwd=tmp_path)  # the rerun succeeds; the partial file is still in the folder
    assert (tmp_path / "checkpoint" / temps[0]).is_file()
    out = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["train"]["outs"][0]
    assert out["path"] == "checkpoint" and out["nfiles"] == 1 and out["size"] == len(b"epoch 1")
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5"
    listing = json.loads((cache / out["md5"][:2] / out["md5"][2:]).read_text())
    assert [entry["relpath"] for entry in listing] == ["last.pt"]
    assert not any(b"JUNK" in f.read_bytes() for f in cache.rglob("*") if f.is_file())
    assert "up to date" in dvc("status", cwd=tmp_path).stdout  # nor does it make the output look changed
