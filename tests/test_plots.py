"""`dvc plots show` / `dvc plots diff` in a fresh clone: the curves committed in git render, one chart per
quantity with its title and axis labels; the pictures, DVC outputs a clone has no data for yet, are
reported missing one by one instead of failing the page (dvc.yaml's top-level `plots:` and the stages'
`plots:`; the chart templates in .dvc/plots/).

A picture inside a folder output (as the ranked lists once were, in data/eval/<set>/) makes DVC fail
every plot of dvc.yaml in a clone whose cache lacks that folder's listing; so each picture has to be
an output of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
# the reID trainings (dvc.yaml's `train` items) and pretraining: every curve their loop logs is on a chart
REID_NETWORKS = ("baseline", "baseline2b", "dsa", "san", "dsa_san", "pretrain")


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"DVC_NO_ANALYTICS": "1", "PATH": f"{Path(DVC).parent}:/usr/bin:/bin"})
    assert done.returncode == 0, f"{cmd}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's files as a clone has them (tracked ones, and new ones git does not ignore), one commit."""
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).split("\0")
    repo = tmp_path_factory.mktemp("clone")
    for name in filter(None, files):
        if (ROOT / name).is_file():  # not a file deleted in the work tree
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        run(cmd, repo)
    assert not (repo / "data" / "eval" / "baseline").exists()  # no DVC data: the state before any `dvc repro`
    return repo


def plots_json(repo: Path, *args: str) -> dict:
    return json.loads(run([DVC, "plots", *args, "--json", "-o", str(repo.parent / "html")], repo))


def top_level_charts(repo: Path) -> dict[str, dict]:
    """dvc.yaml's top-level plot definitions that combine files, by id, with ${paths.*} resolved."""
    text = (repo / "dvc.yaml").read_text()
    paths = yaml.safe_load(text)["vars"][0]["paths"]
    for key, value in paths.items():
        text = text.replace(f"${{paths.{key}}}", value)
    charts = {}
    for entry in yaml.safe_load(text)["plots"]:
        (plot_id, props), = entry.items() if isinstance(entry, dict) else [(entry, None)]
        assert isinstance(props, dict) and isinstance(props.get("y"), dict), f"{plot_id}: not a chart of files"
        charts[plot_id] = props
    return charts


def stage_pictures(repo: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {out.def_path for stage in dvc.index.stages for out in stage.outs if out.plot}


@pytest.fixture(scope="module")
def shown(clone) -> dict:
    return plots_json(clone, "show")


def test_clone_shows_every_chart_and_picture(clone, shown):
    assert "data" in shown, shown.get("errors")  # a page, not one error for the whole of dvc.yaml
    charts, pictures = top_level_charts(clone), stage_pictures(clone)
    assert {f"data/{where}/{m}/ranked_list.png" for where in ("eval", "target/eval")
            for m in (*REID_NETWORKS[:-1], "pretrained")} <= pictures
    assert set(shown["data"]) == set(charts) | pictures
    # what may fail is a file a clone lacks: a picture (DVC data) or a curve not committed yet
    for error in shown.get("errors", []):
        assert "name" in error and error["rev"] == "workspace", error  # one plot's error, not the revision's
        assert error["type"] == "FileNotFoundError", error
        assert error["name"] in pictures or not (clone / error["source"]).exists(), error
    failed = {error["name"] for error in shown.get("errors", [])}
    for plot_id in (set(charts) | pictures) - failed:
        assert shown["data"][plot_id], plot_id


def test_committed_curves_render_with_titles_and_labels(clone, shown):
    charts = top_level_charts(clone)
    committed = {"CMC", "train_loss", "train_loss_id", "train_loss_triplet", "pretrain_loss"}
    assert committed <= set(charts)
    for plot_id, props in charts.items():
        assert {"title", "x_label", "y_label", "template"} <= set(props), plot_id
        assert (clone / ".dvc" / "plots" / f"{props['template']}.json").is_file(), plot_id
        if not all((clone / name).is_file() for name in props["y"]):
            continue  # curves no repro has committed yet: shown once they are
        (rendered,) = shown["data"][plot_id]
        spec = rendered["content"]
        assert spec["title"]["text"] == props["title"]
        assert spec["encoding"]["x"]["title"] == props["x_label"]
        assert spec["encoding"]["y"]["title"] == props["y_label"]
        values = spec["data"]["values"]
        assert len(values) >= 2 * len(props["y"]), plot_id  # every file's curve, not only one
        committed.discard(plot_id)
    assert not committed, f"charts of committed curves that did not render: {committed}"


def test_every_reid_curve_is_on_a_chart(clone):
    on_charts = {name for props in top_level_charts(clone).values() for name in props["y"]}
    for net in REID_NETWORKS:
        curves = {str(p.relative_to(clone)) for p in (clone / "metrics/train" / net / "plots/metrics").glob("*.tsv")}
        assert curves, net
        assert curves <= on_charts, f"{net}: curves on no chart: {sorted(curves - on_charts)}"


def test_plots_diff_shows_both_revisions(clone):
    diff = plots_json(clone, "diff", "HEAD")
    assert "data" in diff, diff.get("errors")
    assert all(error["type"] == "FileNotFoundError" for error in diff.get("errors", [])), diff["errors"]
    (cmc,) = diff["data"]["CMC"]
    assert {value["rev"] for value in cmc["content"]["data"]["values"]} == {"workspace", "HEAD"}
