"""End-to-end: the whole DVC pipeline on the micro profile, in a throw-away copy of the repository."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("baseline", "baseline2b", "dsa", "san", "dsa_san")
COPIED = ("reid", "stages", "profiles", "dvc.yaml", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore")

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the project on the micro profile, after one full `dvc repro`."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "stages.profile", "micro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "micro"], repo)
    run(["dvc", "repro"], repo)
    return repo


def test_repro_writes_every_output(repo):
    for name in MODELS:
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert 0.0 <= metrics["mAP_pct"] <= 100.0
        assert 0.0 <= metrics["rank1_pct"] <= 100.0
        assert metrics["n_query_valid"] > 0
        assert (repo / "metrics" / "cmc" / f"{name}.tsv").is_file()
        assert (repo / "data" / "eval" / name / "ranked_list.png").is_file()
        train = json.loads((repo / "metrics" / "train" / f"{name}.json").read_text())
        assert train["epochs"] == 2 and train["steps"] == 4  # micro: 2 epochs x max_batches_per_epoch 2
        assert train["final_id_loss"] > 0 and train["chance_id_loss"] > 0
    for name in ("dsa", "dsa_san"):
        diagnostics = json.loads((repo / "metrics" / f"{name}.json").read_text())["diagnostics"]
        assert set(diagnostics) == {"mf", "fused", "guide"}
    pretrain = json.loads((repo / "metrics" / "train" / "pretrain.json").read_text())
    assert pretrain["steps"] == 2 and pretrain["identities"] == 6
    assert json.loads((repo / "metrics" / "pretrained.json").read_text())["n_query_valid"] > 0
    claims = json.loads((repo / "metrics" / "claims.json").read_text())["claims"]
    assert len(claims) == 10 and {c["metric"] for c in claims} == {"rank1", "mAP"}
    assert all(c["ci95"][0] <= c["delta"] <= c["ci95"][1] for c in claims)
    densepose = json.loads((repo / "metrics" / "densepose.json").read_text())
    assert 0.0 < densepose["found_fraction"] <= 1.0
    sanpg = json.loads((repo / "metrics" / "sanpg.json").read_text())
    assert sanpg["heldout_l1"] > 0 and sanpg["n_heldout_textures"] > 0
    texture = json.loads((repo / "metrics" / "texture.json").read_text())
    assert texture["n_cached"] > 0 and texture["l1_pseudo"] > 0  # scored against the world's true atlases
    summary = (repo / "metrics" / "summary.md").read_text()
    assert all(f"| `{name}` |" in summary for name in MODELS)
    assert "| pretrained trunk, no fine-tuning |" in summary
    # the micro profile's lite DensePose (2 epochs) is far below the floors: said, not hidden
    dsap = json.loads((repo / "metrics" / "dsap.json").read_text())
    assert 0 <= dsap["mean_parts_seen"] <= 24 and dsap["n_images"] > 0
    assert "- **Warning**: " in summary
    for picture in ("synth/contact_sheet.png", "synth/target_sheet.png", "dsap_samples.png", "sanpg/samples.png",
                    "texture_samples.png", "report/figures.png"):
        assert (repo / "data" / picture).stat().st_size > 0


def test_repro_evaluates_every_model_on_the_cross_dataset_target(repo):
    target = pq.read_table(repo / "data" / "target" / "manifest.parquet")
    assert set(target.column("split").to_pylist()) == {"query", "gallery"}
    n_query = target.column("split").to_pylist().count("query")
    for name in (*MODELS, "pretrained"):
        metrics = json.loads((repo / "metrics" / "cross" / f"{name}.json").read_text())
        assert metrics["source"] == {"dataset": "synthetic", "root": "data/synth/market"}
        assert metrics["target"] == {"dataset": "synthetic", "root": "data/synth/target"}
        assert metrics["n_query"] == n_query and metrics["n_query_valid"] > 0 and "diagnostics" not in metrics
        ids = pq.read_table(repo / "data" / "target" / "features" / f"{name}.parquet").column("image_id").to_pylist()
        assert ids == target.column("image_id").to_pylist()
        assert (repo / "data" / "target" / "eval" / name / "per_query.parquet").is_file()
        assert (repo / "metrics" / "cross" / "cmc" / f"{name}.tsv").is_file()
    summary = (repo / "metrics" / "summary.md").read_text()
    section = summary.split("## Cross-dataset: `synthetic` (data/synth/market) → `synthetic` (data/synth/target)")[1]
    assert all(f"| `{name}` |" in section for name in MODELS) and "| pretrained trunk, no fine-tuning |" in section


def test_second_repro_does_nothing(repo):
    out = run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)


def test_deleted_training_curves_come_back_from_the_checkpoint(repo):
    # `rm -rf metrics/train/<m> && dvc repro`: the finished network is restored from its checkpoint, and its
    # curves are rewritten from the checkpoint's rows (they once stayed missing: DVC failed on every repro)
    curves = repo / "metrics" / "train" / "baseline"
    before = {p.relative_to(curves): p.read_bytes() for p in curves.rglob("*") if p.is_file()}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    shutil.rmtree(curves)
    out = run(["dvc", "repro", "train@baseline"], repo)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"train@baseline"}
    assert {p.relative_to(curves): p.read_bytes() for p in curves.rglob("*") if p.is_file()} == before
    after = yaml.safe_load((repo / "dvc.lock").read_text())  # the same network: nothing downstream changes
    assert out_md5(after, "train@baseline", "data/models/baseline/model.pt") == out_md5(
        lock, "train@baseline", "data/models/baseline/model.pt")


def test_a_missing_dataset_root_is_named_by_its_parameter(repo):
    params = repo / "params.yaml"
    kept = params.read_text()
    changed = yaml.safe_load(kept)
    changed["prepare"].update(dataset="custom", root="mydata/manifest.csv")
    params.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        proc = subprocess.run(["dvc", "repro", "locate@prepare"], cwd=repo, capture_output=True, text=True,
                              env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    finally:
        params.write_text(kept)
    assert proc.returncode != 0
    assert "error: params.yaml: prepare.root: mydata/manifest.csv not found" in proc.stdout + proc.stderr
    run(["dvc", "checkout", "locate@prepare"], repo)  # the failed run removed its receipt
    assert "Data and pipelines are up to date" in run(["dvc", "status", "locate@prepare"], repo)


def test_dvc_lists_every_metric_and_plot(repo, tmp_path):
    # Metrics are declared by the stages that write them, plots by stages and by dvc.yaml's top-level list.
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))[""]["data"]
    expected = ({f"metrics/{m}.json" for m in (*MODELS, "pretrained", "densepose", "densepose_lite", "dsap", "sanpg",
                                               "texture", "claims")}
                | {f"metrics/train/{net}.json" for net in (*MODELS, "pretrain", "sanpg", "densepose")}
                | {f"metrics/cross/{m}.json" for m in (*MODELS, "pretrained")})
    assert set(shown) == expected and all("error" not in m for m in shown.values()), shown.keys()
    plots = json.loads(run(["dvc", "plots", "show", "--json", "-o", str(tmp_path)], repo))  # images: out of the repo
    assert "errors" not in plots, plots["errors"]
    pictures = {"data/synth/contact_sheet.png", "data/synth/target_sheet.png", "data/dsap_samples.png", "data/sanpg/samples.png",
                "data/texture_samples.png", "data/report/figures.png", *(f"data/eval/{m}/ranked_list.png" for m in MODELS),
                *(f"data/target/eval/{m}/ranked_list.png" for m in MODELS)}
    assert pictures | {"CMC", "CMC_target"} <= set(plots["data"])
    for chart in ("CMC", "CMC_target"):  # the six feature sets' curves on one chart, on the source and the target
        assert plots["data"][chart][0]["content"]["data"]["values"]
    # dvc.yaml's charts of the training curves, every network's on one of them (tests/test_plots.py checks
    # them in a fresh clone, before any repro)
    shown_files = {value.get("filename") for chart in ("train_loss", "pretrain_loss", "sanpg_l1", "densepose_loss", "lr")
                   for value in plots["data"][chart][0]["content"]["data"]["values"]}
    assert {f"{net}/plots/metrics/lr.tsv" for net in (*MODELS, "pretrain", "sanpg", "densepose")} <= shown_files


def dirty_stages_after(repo: Path, section: str, key: str, factor: float) -> set[str]:
    """Stages `dvc status` calls changed once params.yaml's section.key is scaled (then restored).

    `dvc status` names only the stages whose own params or deps changed; what re-runs after them
    is their descendants in the DAG (see `descendants`).
    """
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = params[section][key] * factor
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(run(["dvc", "status", "--json"], repo))
    finally:
        (repo / "params.yaml").write_text(run(["git", "show", "HEAD:params.yaml"], repo))
    return {stage.split(":")[-1] for stage in status}


def descendants(repo: Path, stages: set[str]) -> set[str]:
    """Every stage `dvc repro` would run after `stages` changed: the stages and all below them in `dvc dag`."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', run(["dvc", "dag", "--dot"], repo))
    reached, frontier = set(stages), set(stages)
    while frontier:
        frontier = {child for parent, child in edges if parent in frontier} - reached
        reached |= frontier
    return reached


def downstream(stages: tuple[str, ...], models: tuple[str, ...]) -> set[str]:
    return {f"{stage}@{m}" for stage in stages for m in models} | {"report"}


EVALUATION = ("train", "features", "evaluate", "cross_evaluate")  # what a model's training change reaches


def test_training_knob_dirties_only_training_and_downstream(repo):
    dirty = dirty_stages_after(repo, "train", "lr", 2)
    assert dirty == {f"train@{m}" for m in MODELS}
    assert descendants(repo, dirty) == downstream(EVALUATION, MODELS)


def test_san_knob_reaches_only_the_san_stages(repo):
    dirty = dirty_stages_after(repo, "train_sanpg", "lr", 2)
    assert dirty == {"train_sanpg"}
    expected = {"train_sanpg", "texture"} | downstream(EVALUATION, ("san", "dsa_san"))
    assert descendants(repo, dirty) == expected


def test_pretraining_knob_reaches_every_trunk_and_nothing_else(repo):
    dirty = dirty_stages_after(repo, "pretrain", "num_workers", 2)
    assert dirty == {"pretrain"}
    expected = ({"pretrain", "train_sanpg", "texture", "features@pretrained", "evaluate@pretrained",
                 "cross_evaluate@pretrained"}
                | downstream(EVALUATION, MODELS))
    assert descendants(repo, dirty) == expected


def test_target_knob_reaches_only_the_cross_dataset_stages(repo):
    dirty = dirty_stages_after(repo, "target", "num_workers", 2)
    assert dirty == {"prepare_target"}
    assert descendants(repo, dirty) == {"prepare_target", "report"} | {
        f"cross_evaluate@{m}" for m in (*MODELS, "pretrained")}


def test_dsap_knob_reaches_only_the_dsa_models(repo):
    dirty = dirty_stages_after(repo, "dsap", "batch_size", 2)
    assert dirty == {"dsap"}
    expected = {"dsap"} | downstream(EVALUATION, ("dsa", "dsa_san"))
    assert descendants(repo, dirty) == expected


def test_experiment_runs_only_dependent_stages_and_metrics_diff_compares_commits(repo):
    # One model's knob keeps the test short; test_training_knob_* covers the knob shared by all models.
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "micro results"], repo)
    out = run(["dvc", "exp", "run", "-S", "models.baseline.triplet_weight=0.5"], repo)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == downstream(EVALUATION, ("baseline",))
    assert yaml.safe_load((repo / "params.yaml").read_text())["models"]["baseline"]["triplet_weight"] == 0.5
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline triplet weight 0.5"], repo)
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo))
    assert "last_epoch_loss" in diff["metrics/train/baseline.json"]  # another loss weight: another training curve
    assert not any(path.startswith(("metrics/densepose", "metrics/dsa")) for path in diff)  # nothing else re-ran


def test_a_colleague_gets_the_results_through_a_dvc_remote(repo, tmp_path):
    # The flow of the README's "The DVC cache and a remote": git remote + DVC remote (local folders here).
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results to share", "--allow-empty"], repo)
    run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], repo)
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], repo)
    run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], repo)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "store")], repo)  # .dvc/config, written uncommitted
    run(["dvc", "push"], repo)
    checkpoints = list(repo.glob("data/**/checkpoint/last.pt"))
    assert checkpoints  # kept on this machine for resuming, but never cached nor pushed:
    for last in checkpoints:
        md5 = hashlib.md5(last.read_bytes()).hexdigest()
        assert not (tmp_path / "store" / "files" / "md5" / md5[:2] / md5[2:]).exists(), last
    names = run(["dvc", "exp", "list", "--all-commits", "--name-only"], repo).split()
    assert names  # test_experiment_runs_only_dependent_stages_... ran one
    run(["dvc", "exp", "push", "origin", names[0]], repo)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", "-b", "main", str(tmp_path / "origin.git"), str(clone)], tmp_path)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "store")], clone)
    run(["dvc", "pull"], clone)
    out = run(["dvc", "repro"], clone)
    assert "Running stage" not in out, out[-3000:]  # the pulled outputs are the committed ones: nothing to do
    assert json.loads(run(["dvc", "metrics", "diff", "--json"], clone)) == {}
    assert not list(clone.glob("data/**/checkpoint"))  # resume state stays on the machine that trained
    run(["dvc", "exp", "pull", "origin", names[0]], clone)
    assert names[0] in run(["dvc", "exp", "list", "--all-commits", "--name-only"], clone).split()


def test_dsap_grid_change_reruns_the_stage_instead_of_restoring_the_cache(repo):
    # Last in the file: it commits and changes the workspace, then restores it. Under the old key
    # `dsap.size` DVC's run-cache ignored the change (treeverse/dvc#10296): "cached - skipping run",
    # and the S = 12 output came back.
    dsap_parquet = repo / "data" / "dsap.parquet"
    grid = yaml.safe_load((repo / "params.yaml").read_text())["dsap"]["grid"]
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "before the DSAP grid change", "--allow-empty"], repo)
    try:
        out = run(["dvc", "exp", "run", "-S", f"dsap.grid={grid + 1}", "dsap"], repo)
        assert set(re.findall(r"Running stage '([^']+)'", out)) == {"dsap"} and "skipping run" not in out
        assert pq.read_schema(dsap_parquet).metadata[b"size"] == str(grid + 1).encode()
    finally:
        # git holds the stage's cache: false metrics, the DVC cache its other outputs
        run(["git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", "metrics/dsap.json"], repo)
        run(["dvc", "checkout", "--force", "dsap"], repo)
    assert pq.read_schema(dsap_parquet).metadata[b"size"] == str(grid).encode()
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)


# A forced re-run of these stages from scratch must change no tracked metric (a forced re-run of the
# whole micro pipeline would double this module's time). One chain through a network of each kind of
# writer: the lite DensePose and its IUV cache, a reID model, its features, scores and the report. The
# pretrain and SAN-PG networks train on the same loop and are written by the same checkpoint code
# (tests/test_engine_loop.py resumes each to identical weights); cross_evaluate embeds and scores with the
# features / evaluate code (reid.engine.inference.embed_feature_set).
RERUN = ("train_densepose", "densepose", "train@baseline", "features@baseline", "evaluate@baseline", "report")
CHECKPOINTS = ("data/densepose/checkpoint", "data/models/baseline/checkpoint")  # else the stages would just resume
NETWORKS = (("train_densepose", "data/densepose/model.pt"), ("train@baseline", "data/models/baseline/model.pt"),
            ("densepose", "data/iuv.parquet"), ("features@baseline", "data/features/baseline.parquet"))


def out_md5(lock: dict, stage: str, path: str) -> str:
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def test_identical_rerun_changes_no_metric(repo):
    # After every other test: it re-runs stages and leaves the new timings in the workspace. Same
    # machine, same threads: quality metrics, curves and networks must come back byte for byte.
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results before the identical re-run", "--allow-empty"], repo)
    before = yaml.safe_load((repo / "dvc.lock").read_text())
    for folder in CHECKPOINTS:
        shutil.rmtree(repo / folder)
    run(["dvc", "repro", "-f", "-s", *RERUN], repo)

    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo))
    assert diff == {}, diff
    changed = run(["git", "status", "--porcelain", "--", "metrics"], repo)
    assert changed == "", changed + run(["git", "diff", "--", "metrics"], repo)[:4000]  # curves and summary too
    after = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage, path in NETWORKS:
        assert out_md5(after, stage, path) == out_md5(before, stage, path), path
    timing = json.loads((repo / "data" / "models" / "baseline" / "timing.json").read_text())
    assert timing["train_time_s"] > 0  # the timings were written again, apart from the metrics
