"""The train stage sizes the network from the caches (S from data/dsap.parquet's metadata) and records
it in model.json, from which the network is rebuilt."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_inference import write_dsap
from test_trainer import make_manifest

from reid.export import load_trained
from reid.parts import N_PARTS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("s", [4, 8])
def test_the_dsa_network_takes_the_dsap_caches_s(tmp_path, monkeypatch, s) -> None:
    import stages.train as stage

    manifest = make_manifest(tmp_path / "data", n_ids=2, per_id=2)
    write_dsap(tmp_path / "data" / "dsap.parquet", manifest["image_id"].to_pylist(), s)
    params = {"train": {"epochs": 1, "p": 2, "k": 2, "height": 64, "width": 32, "num_workers": 0, "device": "cpu",
                        "max_batches_per_epoch": 1},
              "models": {"dsa": {"backbone": "resnet18", "pretrained": None, "width_mult": 0.125,
                                 "id_head_hidden": 8}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    stage.main(["dsa", "--manifest", "data/manifest.parquet", "--dsap", "data/dsap.parquet",
                "--texture", "data/texture.parquet", "--out", "data/models/dsa", "--curves", "metrics/train/dsa"])
    info = json.loads((tmp_path / "data/models/dsa/model.json").read_text())
    assert info["dsap_size"] == s and "dsap_size" not in info["model"] and "texture_tile" not in info
    model = load_trained(tmp_path / "data/models/dsa", whole=True).network
    assert model.dsap_size == s
    with torch.no_grad():
        model.forward_fused_features(torch.randn(1, 3, 64, 32), torch.randn(1, N_PARTS, 3, s, s))
