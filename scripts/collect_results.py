"""Copy a finished pipeline run's metrics into a committed results folder, with what identifies the run.

    python scripts/collect_results.py --run DIR --out results/cuhk03 --manifest /path/to/manifest.csv \
        --started 2026-12-07T14:40:00Z --override prepare.root=/path/to/cuhk03 [--override ...]

`--run` is the repository copy the run happened in (its metrics/ and params.yaml); only the metrics files
written since `--started` are taken (metrics/ also holds committed files of other runs), and nothing else
leaves it: real crops, features and weights stay out of the repository. Writes ``<out>/run.json``
(``manifest_sha256``: sha256 of the manifest file that was run; ``commit``: the run copy's HEAD and whether
its work tree was clean; ``profile`` and ``overrides``; ``wall_time_s`` from ``--started`` to the newest
metrics file; ``files``: what was copied), ``<out>/metrics/<set>.json`` for every evaluated feature set (the evaluate stage's format),
``<out>/claims.json`` and ``<out>/summary.md`` (the report stage's, when the run got that far).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
from pathlib import Path

from reid.io import file_sha256, write_json_atomic
from reid.modeling import FEATURE_SETS

REPORT_FILES = {"claims.json": "claims.json", "summary.md": "summary.md"}  # metrics/<file> -> <out>/<file>


def git_state(repo: Path) -> dict[str, object]:
    """The run copy's HEAD commit and whether tracked files differed from it (the run's params.yaml aside)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!params.yaml",
                             ":!dvc.lock", ":!metrics"], cwd=repo, capture_output=True, text=True, check=True)
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def collect(run: Path, out: Path, since: float) -> dict[str, Path]:
    """Copy the feature-set metrics and report files the run wrote (modified after `since`, a POSIX time:
    metrics/ also holds the committed files of other runs) into `out`: {name in `out`: source file}."""
    written = lambda path: path.is_file() and path.stat().st_mtime >= since  # noqa: E731
    sources = {f"metrics/{name}.json": run / "metrics" / f"{name}.json" for name in FEATURE_SETS}
    sources = {target: source for target, source in sources.items() if written(source)}
    if not sources:
        raise FileNotFoundError(f"{run / 'metrics'}: no feature set evaluated by this run (dvc repro evaluate@<m>)")
    # a run of some models only has no report yet
    sources |= {target: run / "metrics" / name for name, target in REPORT_FILES.items()
                if written(run / "metrics" / name)}
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    for target, source in sources.items():
        shutil.copyfile(source, out / target)
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="repository copy the pipeline ran in")
    parser.add_argument("--out", type=Path, required=True, help="results folder to write (e.g. results/cuhk03)")
    parser.add_argument("--manifest", type=Path, required=True, help="the custom manifest file the run read")
    parser.add_argument("--profile", default="", help="the profile params.yaml was generated from")
    parser.add_argument("--override", action="append", default=[], help="a -S key=value of the run (repeat)")
    parser.add_argument("--started", required=True, help="UTC start of the run, ISO 8601 (e.g. 2026-12-07T14:40:00Z)")
    args = parser.parse_args()
    started = dt.datetime.fromisoformat(args.started.replace("Z", "+00:00"))
    copied = collect(args.run, args.out, started.timestamp())
    newest = max(source.stat().st_mtime for source in copied.values())
    write_json_atomic(args.out / "run.json", {
        "manifest": args.manifest.name, "manifest_sha256": file_sha256(args.manifest), **git_state(args.run),
        "profile": args.profile, "overrides": args.override,
        "wall_time_s": round(newest - started.timestamp()), "files": sorted(copied),
    })
    print(f"collected {len(copied)} files from {args.run} -> {args.out}")


if __name__ == "__main__":
    main()
