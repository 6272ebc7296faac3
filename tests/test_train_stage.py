"""The train stage sizes the network from the caches (S from data/dsap.parquet's metadata) and records
it in model.json, from which the network is rebuilt."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_inference import write_dsap
from test_trainer import make_manifest

from reid.config import ConfigError
from reid.export import load_state, load_trained
from reid.modeling.cost import model_cost, parameter_count
from reid.parts import N_PARTS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def dsa_setup(root, s: int, epochs: int = 1) -> None:
    """A 2-identity manifest, its DSAP cache of side `s` and params for a tiny dsa, in `root`."""
    manifest = make_manifest(root / "data", n_ids=2, per_id=2)
    write_dsap(root / "data" / "dsap.parquet", manifest["image_id"].to_pylist(), s)
    params = {"train": {"epochs": epochs, "p": 2, "k": 2, "height": 64, "width": 32, "num_workers": 0,
                        "device": "cpu", "max_batches_per_epoch": 1},
              "models": {"dsa": {"backbone": "resnet18", "pretrained": None, "width_mult": 0.125,
                                 "id_head_hidden": 8}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def train_dsa(out: str) -> None:
    import stages.train as stage

    stage.main(["dsa", "--manifest", "data/manifest.parquet", "--dsap", "data/dsap.parquet",
                "--texture", "data/texture.parquet", "--out", out, "--curves", f"metrics/train/{out}"])


@pytest.mark.parametrize("s", [4, 8])
def test_the_dsa_network_takes_the_dsap_caches_s(tmp_path, monkeypatch, s) -> None:
    dsa_setup(tmp_path, s)
    monkeypatch.chdir(tmp_path)
    train_dsa("data/models/dsa")
    info = json.loads((tmp_path / "data/models/dsa/model.json").read_text())
    assert info["dsap_size"] == s and "dsap_size" not in info["model"] and "texture_tile" not in info
    trained = load_trained(tmp_path / "data/models/dsa", whole=True)
    model = trained.network
    assert model.dsap_size == s
    # The cost is the trained network's, counted at the size it trained at (64 x 32), not another.
    assert trained.info.cost == info["cost"] == model_cost(model, (64, 32), dsap_size=s)
    assert info["cost"]["inference"]["params"] == parameter_count(load_trained(tmp_path / "data/models/dsa").network)
    assert info["cost"]["training"]["flops"] > info["cost"]["inference"]["flops"] > 0  # the DSAG-Stream
    with torch.no_grad():
        model.forward_fused_features(torch.randn(1, 3, 64, 32), torch.randn(1, N_PARTS, 3, s, s))


def test_counting_the_cost_leaves_the_trained_weights_bit_identical(tmp_path, monkeypatch) -> None:
    """model.pt is the same whether or not the stage counts the model's cost (cost=None: no count)."""
    import stages.train as stage

    dsa_setup(tmp_path, 4, epochs=2)
    monkeypatch.chdir(tmp_path)
    train_dsa("counted")
    monkeypatch.setattr(stage, "model_cost", lambda *args, **kwargs: None)
    train_dsa("uncounted")
    assert "cost" in json.loads((tmp_path / "counted/model.json").read_text())
    assert "cost" not in json.loads((tmp_path / "uncounted/model.json").read_text())
    counted, uncounted = load_state(tmp_path / "counted/model.pt"), load_state(tmp_path / "uncounted/model.pt")
    assert counted.keys() == uncounted.keys()
    assert all(torch.equal(counted[k], uncounted[k]) for k in counted)


@pytest.mark.parametrize("change, message", [({"height": 7}, "train.height must be >= 32"),
                                             ({"width": 8}, "train.width must be >= 16")])
def test_an_input_smaller_than_the_trunk_can_honour_is_refused_before_training(tmp_path, monkeypatch, change, message):
    dsa_setup(tmp_path, 4)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["train"].update(change)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"params.yaml: {message}"):
        train_dsa("data/models/dsa")
    assert not (tmp_path / "data/models/dsa").exists()


def test_the_imagenet_start_of_an_efficientnet_enters_the_run_fingerprint(tmp_path, monkeypatch) -> None:
    """`pretrained: imagenet` names no file: the fingerprint hashes the packaged weights it loads."""
    dsa_setup(tmp_path, 4)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["models"] = {"baseline": {"backbone": "efficientnet_lite0", "pretrained": "imagenet", "id_head_hidden": 8}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    import stages.train as stage

    stage.main(["baseline", "--manifest", "data/manifest.parquet", "--dsap", "data/dsap.parquet",
                "--texture", "data/texture.parquet", "--out", "data/models/baseline", "--curves",
                "metrics/train/baseline"])
    info = json.loads((tmp_path / "data/models/baseline/model.json").read_text())
    assert info["model"]["backbone"] == "efficientnet_lite0" and info["model"]["pretrained"] == "imagenet"
