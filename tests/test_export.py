"""Model bundles and export: weights round trip, wrong-model refusal, ONNX/TorchScript equal PyTorch."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from modelutil import build

from reid.config import ConfigError
from reid.export import (
    export_onnx,
    export_torchscript,
    load_inference_model,
    load_trained,
    load_trained_model,
    model_info,
    onnx_weight_count,
    read_model_info,
    state_num_classes,
    weight_count,
    write_model_info,
)
from reid.modeling import MODEL_INPUTS
from reid.modeling.config import ModelConfig

SIZE = (64, 32)
CFG = ModelConfig(backbone="resnet18", pretrained=None, width_mult=0.125, id_head_hidden=16)
S = 32  # the dsa test model's DSAP side (in the pipeline: the DSAP cache's)


def info_of(name: str, cfg: ModelConfig = CFG):
    """The model.json description of a test model, S given where the model reads DSAP images."""
    return model_info(name, cfg, SIZE, **({"dsap_size": S} if "dsap" in MODEL_INPUTS[name] else {}))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def save_trained(model: torch.nn.Module, folder) -> str:
    """model.pt exactly as the train stage writes it (tensors only)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / "model.pt")
    return folder / "model.pt"


def randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that BN folding in the export is really exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{name: (training model, weights path)} for a tiny baseline and dsa with 5 identities."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("baseline", "dsa"):
        torch.manual_seed(0)
        model = build(name, 5, CFG, dsap_size=S).eval()
        randomise_bn(model)
        out[name] = (model, save_trained(model, root / name))
    return out


def test_load_inference_model_round_trip_and_drops_training_parts(trained) -> None:
    images = torch.randn(3, 3, *SIZE)
    for name, (model, weights) in trained.items():
        net = load_inference_model(weights, info_of(name))
        assert not net.training
        with torch.no_grad():
            assert torch.equal(net(images), model.forward_features(images))
        n_net = sum(p.numel() for p in net.parameters())
        assert n_net < sum(p.numel() for p in model.parameters())  # classifiers (and the DSAG-Stream) dropped
    dsa_net = load_inference_model(trained["dsa"][1], info_of("dsa"))
    assert not any(name.startswith("dsag") for name, _ in dsa_net.named_parameters())


def test_load_trained_model_restores_the_whole_model_with_its_classes(trained) -> None:
    for name, (model, weights) in trained.items():
        full = load_trained_model(weights, info_of(name))
        assert not full.training
        assert state_num_classes(full, full.state_dict()) == 5  # sized from the classifier weights
        expected = model.state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in full.state_dict().items())
    dsa = load_trained_model(trained["dsa"][1], info_of("dsa"))
    images, dsap = torch.randn(2, 3, *SIZE), torch.randn(2, 24, 3, S, S)
    with torch.no_grad():
        assert torch.equal(dsa.forward_fused_features(images, dsap),
                           trained["dsa"][0].forward_fused_features(images, dsap))
    with pytest.raises(ValueError, match="does not hold a 'baseline2b' model"):
        load_trained_model(trained["dsa"][1], info_of("baseline2b"))
    state = dict(trained["baseline"][0].state_dict(), **{"classifier.net.3.weight": torch.zeros(7, 16)})
    with pytest.raises(ValueError, match="one number of training identities"):
        state_num_classes(trained["dsa"][0], {**trained["dsa"][0].state_dict(),
                                              "cls_z_global.net.3.weight": torch.zeros(7, 16)})
    assert state_num_classes(trained["baseline"][0], state) == 7


def test_wrong_or_bad_weights_are_refused_with_clear_errors(trained, tmp_path) -> None:
    dsa_weights = trained["dsa"][1]
    with pytest.raises(ValueError, match="does not hold a 'baseline2b' model"):  # extra DSAG-Stream keys
        load_inference_model(dsa_weights, info_of("baseline2b"))
    with pytest.raises(ValueError, match="does not hold a 'baseline' model"):
        load_inference_model(dsa_weights, info_of("baseline"))
    r50 = ModelConfig(backbone="resnet50", pretrained=None, id_head_hidden=16)
    with pytest.raises(ValueError, match="does not"):
        load_inference_model(trained["baseline"][1], info_of("baseline", r50))
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"weights": object()}, protocol=2))
    with pytest.raises(ValueError, match="not a tensors-only PyTorch state dict"):
        load_inference_model(pickled, info_of("baseline"))
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        model_info("resnet", CFG, SIZE)
    with pytest.raises(ValueError, match="two integers"):
        model_info("dsa", CFG, (64,))


def test_model_info_round_trip_and_errors(tmp_path) -> None:
    info = info_of("dsa")
    path = write_model_info(tmp_path, info)
    assert path.name == "model.json"
    back = read_model_info(path)
    assert back == info and back.input_size == SIZE
    data = json.loads(path.read_text())
    assert data["format"] == "reid-model/2" and data["dsap_size"] == S and "dsap_size" not in data["model"]
    assert "dsap_size" not in info_of("baseline").as_json()  # only the models that read a cache record it
    assert "cost" not in data  # recorded by the train stage only
    cost = {"training": {"params": 9, "flops": 80}, "inference": {"params": 7, "flops": 60}}
    with_cost = model_info("dsa", CFG, SIZE, dsap_size=S, cost=cost)
    assert json.loads(write_model_info(tmp_path / "c", with_cost).read_text())["cost"] == cost
    assert read_model_info(tmp_path / "c" / "model.json") == with_cost
    data["model"]["width_mult"] = 0.0
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="width_mult"):
        read_model_info(path)
    data["model"]["width_mult"] = 1.0
    del data["input_size"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="missing field 'input_size'"):
        read_model_info(path)
    data["input_size"] = list(SIZE)
    del data["dsap_size"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="model.json: model 'dsa' needs dsap_size"):
        read_model_info(path)
    path.write_text(json.dumps({"name": "dsa"}))
    with pytest.raises(ValueError, match="not a reid model.json"):
        read_model_info(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable model.json"):
        read_model_info(path)


def test_a_v1_model_json_with_s_and_t_in_its_config_is_still_read(tmp_path) -> None:
    """reid-model/1 kept S and T as ModelConfig fields; they move out, kept where the model reads them."""
    v1 = {"format": "reid-model/1", "input_size": list(SIZE),
          "model": {**info_of("baseline").as_json()["model"], "dsap_size": 12, "texture_tile": 32}}
    for name, shapes in (("dsa", (12, None)), ("san", (None, 32)), ("dsa_san", (12, 32)), ("baseline", (None, None))):
        (tmp_path / "model.json").write_text(json.dumps({**v1, "name": name}))
        info = read_model_info(tmp_path / "model.json")
        assert (info.name, info.dsap_size, info.texture_tile, info.model) == (name, *shapes, CFG)


def test_load_trained_rebuilds_from_model_json_alone(trained, tmp_path) -> None:
    model, weights = trained["dsa"]
    with pytest.raises(FileNotFoundError, match="no .*model.json beside"):
        load_trained(weights.parent)
    cost = {"training": {"params": 9, "flops": 80}, "inference": {"params": 7, "flops": 60}}
    write_model_info(weights.parent, model_info("dsa", CFG, SIZE, dsap_size=S, cost=cost))  # as the train stage
    loaded = load_trained(weights)  # the model.pt file names its folder as well
    assert loaded.weights == weights and loaded.info.cost == cost
    write_model_info(weights.parent, info_of("dsa"))
    loaded = load_trained(weights)
    assert loaded.weights == weights and loaded.info == info_of("dsa")
    images, dsap = torch.randn(2, 3, *SIZE), torch.randn(2, 24, 3, S, S)
    whole = load_trained(weights.parent, whole=True).network
    with torch.no_grad():
        assert torch.equal(loaded.network(images), model.forward_features(images))
        assert torch.equal(whole.forward_fused_features(images, dsap), model.forward_fused_features(images, dsap))
    assert whole.dsap_size == S  # S as model.json records it
    with pytest.raises(ValueError, match="describes model 'dsa', not 'baseline2b'"):
        load_trained(weights.parent, name="baseline2b")


@pytest.mark.parametrize("name", ["baseline", "dsa"])
def test_onnx_export_equals_pytorch_with_dynamic_batch(trained, tmp_path, name) -> None:
    model, weights = trained[name]
    info = info_of(name)
    net = load_inference_model(weights, info)
    path = export_onnx(net, tmp_path / f"{name}.onnx", info)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for batch in (1, 3):  # neither is the export's example batch (2)
        images = torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model.forward_features(images).numpy()
        (got,) = session.run(None, {"image": images.numpy()})
        assert got.shape == expected.shape == (batch, net.feature_dim)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # BN is folded into the convs; the conv weights are exactly the inference network's (no DSAG-Stream).
    assert onnx_weight_count(path) == weight_count(net)
    assert onnx_weight_count(path) < weight_count(model)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["reid_model"] == name and meta["input_size"] == "64x32"
    assert meta["feature_dim"] == str(net.feature_dim)


@pytest.mark.parametrize("name", ["baseline", "dsa"])
def test_torchscript_export_equals_pytorch(trained, tmp_path, name) -> None:
    model, weights = trained[name]
    info = info_of(name)
    net = load_inference_model(weights, info)
    path = export_torchscript(net, tmp_path / f"{name}.pt", info)
    extra = {"reid.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        loaded = torch.jit.load(str(path), _extra_files=extra)
    for batch in (1, 3):
        images = torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            torch.testing.assert_close(loaded(images), model.forward_features(images), atol=1e-4, rtol=0)
    count = lambda m: sum(v.numel() for v in m.state_dict().values() if v.is_floating_point())
    assert count(loaded) == count(net) < count(model)
    assert json.loads(extra["reid.json"])["reid_model"] == name
