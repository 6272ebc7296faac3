"""Scaling table: every stage's wall time, CPU time, peak RSS and output bytes as the data grows.

    .venv/bin/python bench/scale.py run micro --workdir /tmp/scale/micro            # a smoke run, minutes
    .venv/bin/python bench/scale.py run default --workdir /tmp/scale/default        # the default world
    .venv/bin/python bench/scale.py run market --workdir /tmp/scale/market          # Market-1501's size
    .venv/bin/python bench/scale.py msmt17 --workdir /tmp/scale/market              # then MSMT17's, non-training
    .venv/bin/python bench/scale.py table /tmp/scale/*/scale_*.json --out results/scale/scale.json

`run SIZE`: a git + DVC copy of this repository's tracked code in --workdir, the size's profile (default:
profiles/default.yaml; market: profiles/market_scale.yaml), then every stage of `dvc dag`, each after the
stages it depends on, as ``dvc repro --single-item <stage>`` — each one measured: wall seconds, CPU seconds (user +
system of the whole process tree, from os.wait4), peak RSS (ru_maxrss: the tree's largest process, DVC's
own included) and the bytes of the stage's outputs (its outs in dvc.lock). DVC's own start-up (~3 s a
stage here) is part of every wall time. Writes ``<workdir>/scale_<size>.json``.

`msmt17`: in a workdir where `run market` finished, a custom manifest of MSMT17's counts (32,621 train,
11,659 query, 82,161 gallery crops) made of copies of the Market-sized world's crops (each copy a new
identity), then the stages that do not train, measured as above against the models trained at Market size.

`table`: merges the sizes' files into ``{"sizes": {size: {"crops": N, "stages": {stage: {"wall_s",
"cpu_s", "peak_rss_mb", "out_bytes"}}}}, "growth": {stage: {"a->b": {metric: exponent}}}}``, the growth
exponent of a metric between two sizes being log(m_b / m_a) / log(crops_b / crops_a): 1 grows as the
data, above 1 faster (issue 26's targets: peak RSS <= 4 GB at Market size, <= 8 GB at MSMT17's; no stage
superlinear but evaluation's query x gallery term).
"""

from __future__ import annotations

import argparse
import csv
import graphlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"micro": "micro", "default": "default", "market": "market_scale"}  # micro: a minutes-long smoke run
MSMT17_COUNTS = {"train": 32621, "query": 11659, "gallery": 82161}
# the stages that do not train, re-run at MSMT17's size (cross_evaluate reads the target world, unchanged)
NON_TRAINING = ("prepare", "densepose", "dsap", "texture", "features", "evaluate", "report")


def measure(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `cmd`; its wall and CPU seconds, peak RSS (MB) of its process tree, and its exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(time.perf_counter() - start, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "returncode": proc.returncode}


def stage_order(dag_dot: str) -> list[str]:
    """Every stage of `dvc dag --dot`'s graph, each after the stages it depends on (ties by name)."""
    nodes = re.findall(r'^"([^"]+)";$', dag_dot, flags=re.M)
    graph: dict[str, set[str]] = {node: set() for node in nodes}
    for before, after in re.findall(r'^"([^"]+)" -> "([^"]+)";$', dag_dot, flags=re.M):
        graph.setdefault(after, set()).add(before)
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return order


def project_stages(workdir: Path) -> list[str]:
    dot = subprocess.run(["dvc", "dag", "--dot"], cwd=workdir, env=tool_env(workdir), check=True,
                         capture_output=True, text=True).stdout
    return stage_order(dot)


def stage_out_bytes(lock: dict, stage: str) -> int:
    """Bytes of a stage's outputs as dvc.lock records them (files and folders)."""
    return sum(int(out.get("size", 0)) for out in lock.get("stages", {}).get(stage, {}).get("outs", []))


def growth(a: dict, b: dict) -> dict[str, float]:
    """Growth exponent of each metric between two sizes' rows (None where a value is 0)."""
    ratio = b["crops"] / a["crops"]
    out = {}
    for metric in ("wall_s", "cpu_s", "peak_rss_mb", "out_bytes"):
        x, y = a["row"].get(metric), b["row"].get(metric)
        out[metric] = round(math.log(y / x) / math.log(ratio), 2) if x and y else None
    return out


def tool_env(workdir: Path) -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="scale", GIT_AUTHOR_EMAIL="scale@localhost",
                GIT_COMMITTER_NAME="scale", GIT_COMMITTER_EMAIL="scale@localhost")


def make_project(workdir: Path, profile: str) -> None:
    """This repository's tracked files (git archive of HEAD) in `workdir`, a git repo of its own, on `profile`,
    without the committed dvc.lock: every stage runs."""
    workdir.mkdir(parents=True, exist_ok=False)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x"], cwd=workdir, input=archive, check=True)
    (workdir / "dvc.lock").unlink(missing_ok=True)
    env = tool_env(workdir)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "stages.profile", profile], ["git", "add", "-A"],
                ["git", "commit", "-qm", f"scale: {profile}"]):
        subprocess.run(cmd, cwd=workdir, env=env, check=True)


def run_stages(workdir: Path, stages: list[str], label: str) -> dict[str, dict]:
    """Each stage alone, measured; stops at the first failure (what ran stays in the result)."""
    env = tool_env(workdir)
    rows: dict[str, dict] = {}
    for stage in stages:
        print(f"scale {label}: {stage} ...", flush=True)
        row = measure(["dvc", "repro", "--single-item", stage], workdir, env)
        lock = yaml.safe_load((workdir / "dvc.lock").read_text()) if (workdir / "dvc.lock").exists() else {}
        row["out_bytes"] = stage_out_bytes(lock, stage)
        rows[stage] = row
        print(f"scale {label}: {stage} {row}", flush=True)
        if row["returncode"] != 0:
            break
    return rows


def manifest_crops(workdir: Path) -> int:
    import pyarrow.parquet as pq
    return pq.read_metadata(workdir / "data" / "manifest.parquet").num_rows


def write_result(workdir: Path, size: str, crops: int, rows: dict[str, dict]) -> Path:
    out = workdir / f"scale_{size}.json"
    out.write_text(json.dumps({"size": size, "crops": crops, "stages": rows}, indent=2) + "\n")
    print(f"scale {size}: {crops} crops, {len(rows)} stages -> {out}")
    return out


def cmd_run(args: argparse.Namespace) -> None:
    workdir = args.workdir
    make_project(workdir, PROFILES[args.size])
    rows = run_stages(workdir, project_stages(workdir), args.size)
    write_result(workdir, args.size, manifest_crops(workdir), rows)


def replicated_manifest(crops: list[tuple[str, int, int, str]], counts: dict[str, int], folder: Path) -> Path:
    """A custom manifest (folder/manifest.csv, images under folder/images/) with `counts` crops per split, made of
    copies of `crops` = (path, pid, camid, split): a split's crops cycled, each round's pids offset so every copy
    is a new identity (queries and gallery crops of a round keep their pairs)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    by_split = {s: [c for c in crops if c[3] == s] for s in counts}
    offset = max(pid for _, pid, _, _ in crops) + 1
    rows = []
    for split, n in counts.items():
        source = by_split[split]
        if not source:
            raise ValueError(f"no {split} crops to replicate")
        for k in range(n):
            path, pid, camid, _ = source[k % len(source)]
            copy = images / f"{split}_{k:06d}{Path(path).suffix}"
            shutil.copyfile(path, copy)
            rows.append((str(copy.relative_to(folder)), pid + (k // len(source)) * offset if pid > 0 else pid, camid,
                         split))
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "pid", "camid", "split"])
        writer.writerows(rows)
    return folder / "manifest.csv"


def cmd_msmt17(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq
    workdir = args.workdir
    table = pq.read_table(workdir / "data" / "manifest.parquet", columns=["path", "pid", "camid", "split"])
    root = Path(pq.read_schema(workdir / "data" / "manifest.parquet").metadata[b"root"].decode())
    root = root if root.is_absolute() else workdir / root
    crops = [(str(p if Path(p).is_absolute() else root / p), pid, cam, split)
             for p, pid, cam, split in zip(*(table[c].to_pylist() for c in ("path", "pid", "camid", "split")), strict=True)]
    counts = {split: max(1, round(n * args.fraction)) for split, n in MSMT17_COUNTS.items()}
    manifest = replicated_manifest(crops, counts, workdir / "msmt17_size")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["prepare"].update(dataset="custom", root=str(manifest))
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = [s for s in project_stages(workdir) if s.split("@")[0] in NON_TRAINING]
    rows = run_stages(workdir, stages, "msmt17")
    write_result(workdir, "msmt17", manifest_crops(workdir), rows)


def cmd_table(args: argparse.Namespace) -> None:
    sizes = {}
    for path in args.files:
        data = json.loads(Path(path).read_text())
        sizes[data["size"]] = {"crops": data["crops"],
                               "stages": {s: {k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "out_bytes")}
                                          for s, r in data["stages"].items() if r["returncode"] == 0}}
    order = sorted(sizes, key=lambda s: sizes[s]["crops"])
    exponents: dict[str, dict] = {}
    for a, b in zip(order, order[1:], strict=False):
        for stage in sizes[a]["stages"].keys() & sizes[b]["stages"].keys():
            exponents.setdefault(stage, {})[f"{a}->{b}"] = growth(
                {"crops": sizes[a]["crops"], "row": sizes[a]["stages"][stage]},
                {"crops": sizes[b]["crops"], "row": sizes[b]["stages"][stage]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sizes": sizes, "growth": dict(sorted(exponents.items()))}, indent=2) + "\n")
    listed = ", ".join(f"{s} ({sizes[s]['crops']} crops)" for s in order)
    print(f"scale table: {listed} -> {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="make a project of one size and measure every stage")
    run.add_argument("size", choices=sorted(PROFILES))
    run.add_argument("--workdir", type=Path, required=True, help="a new folder")
    msmt = sub.add_parser("msmt17", help="in a finished market workdir: the non-training stages at MSMT17's size")
    msmt.add_argument("--workdir", type=Path, required=True)
    msmt.add_argument("--fraction", type=float, default=1.0, help="of MSMT17's counts (a smoke run: 0.002)")
    table = sub.add_parser("table", help="merge scale_<size>.json files, with growth exponents")
    table.add_argument("files", nargs="+")
    table.add_argument("--out", type=Path, default=Path("results/scale/scale.json"))
    args = parser.parse_args(argv)
    {"run": cmd_run, "msmt17": cmd_msmt17, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    main()
