"""The features stage: weights folder per name (pretrained -> data/pretrain), model.json over params,
and the dsa models' fused and guide diagnostics beside the inference features."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from test_inference import DSA_CFG, SIZE, S, write_dsap
from test_trainer import make_manifest

from reid.export import file_sha256, model_info, write_model_info
from reid.io import parquet_metadata, write_parquet_atomic
from reid.modeling.build import build_model
from stages import features

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def save_model(folder, name: str, *, info: bool = True) -> torch.nn.Module:
    """A random `name` model with 3 identities saved as the train stage does (model.pt [+ model.json])."""
    torch.manual_seed(0)
    model = build_model(name, 3, DSA_CFG).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, folder / "model.pt")
    if info:
        write_model_info(folder, model_info(name, DSA_CFG, SIZE))
    return model


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A repository-like folder: params.yaml, a query + gallery manifest and its DSAP cache."""
    manifest = make_manifest(tmp_path / "crops", n_ids=2, per_id=2)
    table = manifest.set_column(manifest.column_names.index("split"), "split",
                                pa.array(["query", "gallery", "query", "gallery"]))
    write_parquet_atomic(tmp_path / "data" / "manifest.parquet", table, {"root": "/"})  # absolute paths
    write_dsap(tmp_path / "data" / "dsap.parquet", table["image_id"].to_pylist())
    params = {"features": {"flip": True, "batch_size": 3, "num_workers": 0, "device": "cpu"},
              "train": {"height": SIZE[0], "width": SIZE[1]},
              "models": {"baseline": {"backbone": "resnet18", "pretrained": None, "dsap_size": S,
                                      "width_mult": DSA_CFG.width_mult, "id_head_hidden": DSA_CFG.id_head_hidden}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def features_of(path) -> np.ndarray:
    return np.array(pq.read_table(path)["feature"].to_pylist(), np.float32)


def test_dsa_writes_inference_fused_and_guide_features(workdir) -> None:
    model = save_model(workdir / "data" / "models" / "dsa", "dsa")
    features.main(["dsa"])
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
    features.main(["pretrained"])
    out = workdir / "data" / "features" / "pretrained.parquet"
    meta = parquet_metadata(out)
    assert (meta["model"], meta["network"], meta["size"]) == ("pretrained", "baseline", f"{SIZE[0]}x{SIZE[1]}")
    assert features_of(out).shape == (4, model.feature_dim)
    assert not (workdir / "data" / "features" / "pretrained_fused.parquet").exists()


def test_model_json_missing_falls_back_to_params_and_a_wrong_one_is_refused(workdir) -> None:
    save_model(workdir / "data" / "models" / "baseline", "baseline", info=False)
    features.main(["baseline"])
    assert (workdir / "data" / "features" / "baseline.parquet").is_file()
    save_model(workdir / "data" / "models" / "san", "baseline")  # a baseline's model.json in san's folder
    with pytest.raises(ValueError, match="describes model 'baseline', not 'san'"):
        features.main(["san"])
    with pytest.raises(FileNotFoundError, match="dvc repro pretrain"):
        features.main(["pretrained"])
    with pytest.raises(SystemExit):
        features.main(["resnet"])
