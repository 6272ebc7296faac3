"""The features stage: the network from its --weights folder's model.json alone (never params; pretrained
-> the pretrain folder), and the dsa models' fused and guide diagnostics beside the inference features."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from modelutil import build
from test_inference import DSA_CFG, SIZE, S, write_dsap
from test_trainer import make_manifest

from reid.export import model_info, write_model_info
from reid.io import file_sha256, parquet_metadata, write_parquet_atomic
from stages import features

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def save_model(folder, name: str, *, info: bool = True) -> torch.nn.Module:
    """A random `name` model with 3 identities saved as the train stage does (model.pt [+ model.json])."""
    torch.manual_seed(0)
    model = build(name, 3, DSA_CFG, dsap_size=S).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, folder / "model.pt")
    if info:
        write_model_info(folder, model_info(name, DSA_CFG, SIZE, **({"dsap_size": S} if name == "dsa" else {})))
    return model


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A repository-like folder: params.yaml (``features`` alone: the stage reads nothing else), a query +
    gallery manifest and its DSAP cache."""
    manifest = make_manifest(tmp_path / "crops", n_ids=2, per_id=2)
    table = manifest.set_column(manifest.column_names.index("split"), "split",
                                pa.array(["query", "gallery", "query", "gallery"]))
    write_parquet_atomic(tmp_path / "data" / "manifest.parquet", table, {"root": "/"})  # absolute paths
    write_dsap(tmp_path / "data" / "dsap.parquet", table["image_id"].to_pylist())
    params = {"features": {"flip": True, "batch_size": 3, "num_workers": 0, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(name: str, weights: str) -> None:
    features.main([name, "--weights", weights, "--manifest", "data/manifest.parquet", "--dsap", "data/dsap.parquet",
                   "--out", "data/features"])


def features_of(path) -> np.ndarray:
    return np.array(pq.read_table(path)["feature"].to_pylist(), np.float32)


def test_dsa_writes_inference_fused_and_guide_features(workdir) -> None:
    model = save_model(workdir / "data" / "models" / "dsa", "dsa")
    run_stage("dsa", "data/models/dsa")
    out = workdir / "data" / "features"
    assert sorted(p.name for p in out.iterdir()) == ["dsa.parquet", "dsa_fused.parquet", "dsa_guide.parquet"]
    mf, fused, guide = (features_of(out / f) for f in ("dsa.parquet", "dsa_fused.parquet", "dsa_guide.parquet"))
    assert mf.shape == fused.shape == guide.shape == (4, model.feature_dim)
    np.testing.assert_allclose(fused, mf + guide, atol=1e-5)
    weights = workdir / "data" / "models" / "dsa" / "model.pt"
    for name in ("dsa.parquet", "dsa_fused.parquet", "dsa_guide.parquet"):
        meta = parquet_metadata(out / name)
        assert meta["model"] == "dsa" and meta["network"] == "dsa"
        assert (meta["weights"], meta["model_sha256"]) == ("data/models/dsa/model.pt", file_sha256(weights))


def test_pretrained_reads_data_pretrain_and_its_model_json(workdir) -> None:
    model = save_model(workdir / "data" / "pretrain", "baseline")
    run_stage("pretrained", "data/pretrain")
    out = workdir / "data" / "features" / "pretrained.parquet"
    meta = parquet_metadata(out)
    assert (meta["model"], meta["network"], meta["size"]) == ("pretrained", "baseline", f"{SIZE[0]}x{SIZE[1]}")
    assert features_of(out).shape == (4, model.feature_dim)
    assert not (workdir / "data" / "features" / "pretrained_fused.parquet").exists()


def test_model_json_missing_or_wrong_is_refused(workdir) -> None:
    save_model(workdir / "data" / "models" / "baseline", "baseline", info=False)
    with pytest.raises(FileNotFoundError, match="no data/models/baseline/model.json: run `dvc repro train@baseline`"):
        run_stage("baseline", "data/models/baseline")
    save_model(workdir / "data" / "models" / "san", "baseline")  # a baseline's model.json in san's folder
    with pytest.raises(ValueError, match="describes model 'baseline', not 'san'"):
        run_stage("san", "data/models/san")
    with pytest.raises(FileNotFoundError, match="dvc repro pretrain"):
        run_stage("pretrained", "data/pretrain")
    with pytest.raises(SystemExit):
        run_stage("resnet", "data/models/resnet")
