import pytest
import torch
from modelutil import loss_history
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reid.config import ConfigError, from_mapping
from reid.modeling.backbone import ResNetTrunk
from reid.modeling.baseline import GlobalEncoder
from reid.modeling.build import MODEL_NAMES, ModelConfig, build_model
from reid.modeling.san import SANPG, SADecoder, decoder_triplet, pairwise_mse
from reid.parts import N_PARTS, atlas_shape

S, T = 16, 8  # tiny DSAP size and texture tile
CFG = ModelConfig(backbone="resnet18", pretrained=None, width_mult=0.125, dsap_size=S, id_head_hidden=32,
                  texture_tile=T, decoder_width_mult=0.125)
R18 = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def tiny_batch(n_ids=3, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w, _ = atlas_shape(T)
    return {
        "image": torch.randn(n_ids * k, 3, 64, 32, generator=g),
        "label": torch.arange(n_ids).repeat_interleave(k),
        "dsap": torch.randn(n_ids * k, N_PARTS, 3, S, S, generator=g),
        # a learnable target: a colour per identity plus a vertical ramp, in [-1, 1]
        "texture": (0.6 * torch.rand(n_ids, 3, 1, 1, generator=g).repeat_interleave(k, 0) * 2 - 0.6
                    + 0.3 * torch.linspace(-1, 1, h).view(1, 1, h, 1)).expand(-1, -1, -1, w).contiguous(),
    }


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_flops(fn, image: torch.Tensor) -> int:
    """FLOPs of fn(image) (a module or a model's forward_features), in eval mode."""
    getattr(fn, "__self__", fn).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(image)
    return counter.get_total_flops()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build_model(name, 3, CFG) for name in ("baseline", "dsa", "san", "dsa_san")}


# --- encoder levels ---

def test_trunk_levels_match_forward_and_channels():
    trunk = ResNetTrunk("resnet18", None, last_stride=1).eval()
    image = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        levels = trunk.levels(image)
        assert list(levels) == ["layer1", "layer2", "layer3", "layer4"]
        assert torch.equal(levels["layer4"], trunk(image))
    assert {k: v.shape[1] for k, v in levels.items()} == trunk.level_channels == R18
    assert [tuple(v.shape[-2:]) for v in levels.values()] == [(16, 8), (8, 4), (4, 2), (4, 2)]
    assert ResNetTrunk("resnet18", None, depth=3).level_channels == {k: R18[k] for k in ("layer1", "layer2", "layer3")}


# --- SA-Dec ---

@pytest.mark.parametrize("tile", [4, 8, 12, 32])
def test_decoder_output_is_the_atlas(tile):
    torch.manual_seed(0)
    net = SANPG("resnet18", None, tile, width_mult=0.0625)
    texture = net(torch.randn(2, 3, 64, 32))
    assert texture.shape == (2, 3, *atlas_shape(tile)[:2])
    assert texture.abs().max() <= 1.0


def test_decoder_levels_widths_and_no_transposed_convs():
    torch.manual_seed(0)
    dec = SADecoder(R18, (48, 32), width_mult=0.25)
    trunk = ResNetTrunk("resnet18", None)
    texture, ups = dec(trunk.levels(torch.randn(2, 3, 64, 32)))
    assert len(ups) == 4
    assert [u.shape[1] for u in ups] == [64, 16, 8, 4]  # (256, 64, 32, 16) x 0.25, at least 4
    assert [tuple(u.shape[-2:]) for u in ups] == [(8, 4), (16, 8), (32, 16), (64, 32)]  # x2 per block
    assert tuple(texture.shape) == (2, 3, 48, 32)
    full = SADecoder({"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}, (192, 128))
    assert full.widths == (256, 64, 32, 16) and full.reduce4[0].out_channels == 512
    for model in (dec, full, SANPG("resnet18", None, T), build_model("san", 3, CFG), build_model("dsa_san", 3, CFG)):
        assert not any(isinstance(m, nn.ConvTranspose2d | nn.ConvTranspose1d | nn.ConvTranspose3d)
                       for m in model.modules())


def test_decoder_init_and_errors():
    torch.manual_seed(0)
    dec = SADecoder(R18, (48, 32))
    bn = torch.cat([m.weight.detach() for m in dec.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01 and 0.01 < bn.std().item() < 0.03
    conv = dec.up[0].res.body[0].weight  # Xavier normal, gain 0.02: std = 0.02 * sqrt(2 / (fan_in + fan_out))
    expected = 0.02 * (2.0 / (2 * conv.shape[1] * 9)) ** 0.5
    assert abs(conv.std().item() / expected - 1.0) < 0.05
    with pytest.raises(ValueError, match="layer3"):
        SADecoder({"layer1": 64, "layer2": 128, "layer4": 512}, (48, 32))


def test_decoder_handles_last_stride_2_and_odd_sizes():
    torch.manual_seed(0)
    net = SANPG("resnet18", None, 6, width_mult=0.0625, last_stride=2)
    assert net(torch.randn(2, 3, 70, 36)).shape == (2, 3, 36, 24)


# --- decoder triplet constraints ---

def reference_decoder_triplet(maps, labels, margin):
    """Straightforward loop: per anchor, hardest positive and hardest negative by whole-map MSE."""
    total, n = 0.0, 0
    for a in range(len(labels)):
        pos = [((maps[a] - maps[p]) ** 2).mean() for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [((maps[a] - maps[q]) ** 2).mean() for q in range(len(labels)) if labels[q] != labels[a]]
        if pos and neg:
            total = total + torch.relu(max(pos) - min(neg) + margin)
            n += 1
    return total / max(n, 1)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_decoder_triplet_any_k_equals_loop_reference(k):
    g = torch.Generator().manual_seed(k)
    p = 4
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]  # any order; a mix of active and inactive anchors
    centres = torch.randn(p, 6, 5, 3, generator=g)
    maps = centres[labels] + 1.5 * torch.randn(p * k, 6, 5, 3, generator=g) + 3.0
    maps.requires_grad_(True)
    loss = decoder_triplet(maps, labels, 0.3)
    ref = reference_decoder_triplet(maps, labels, 0.3)
    assert torch.allclose(loss, ref, atol=1e-5) and loss.item() > 0
    (grad,) = torch.autograd.grad(loss, maps)
    (ref_grad,) = torch.autograd.grad(ref, maps)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    assert torch.allclose(pairwise_mse(maps)[0, 1], ((maps[0] - maps[1]) ** 2).mean(), atol=1e-5)


def test_decoder_triplet_margin_and_degenerate_batches():
    labels = torch.tensor([0, 0, 1, 1])
    maps = torch.tensor([0.0, 0.0, 10.0, 10.0]).view(4, 1, 1, 1).expand(4, 2, 2, 2).clone()
    assert decoder_triplet(maps, labels, 0.3).item() == pytest.approx(0.0)  # separated beyond the margin
    assert decoder_triplet(torch.zeros(4, 2, 2, 2), labels, 0.3).item() == pytest.approx(0.3)
    lone = torch.randn(3, 2, 2, 2, requires_grad=True)
    zero = decoder_triplet(lone, torch.tensor([0, 1, 2]), 0.3)  # no positive anywhere
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="labels"):
        decoder_triplet(lone, torch.tensor([0, 1]), 0.3)


# --- models: interface, losses, inference cost ---

@pytest.mark.parametrize("name,inputs", [("san", ("texture",)), ("dsa_san", ("dsap", "texture"))])
def test_interface_and_loss_terms(models, name, inputs):
    model, batch = models[name], tiny_batch()
    assert name in MODEL_NAMES and tuple(model.inputs) == inputs
    out = model.train()(batch)
    assert out["texture"].shape == batch["texture"].shape
    assert [out[f"decoder_up{i}"].shape[0] for i in range(1, 5)] == [6] * 4
    terms = model.losses(out, batch)
    assert {"recon", "decoder_triplet"} <= set(terms) and all(t.dim() == 0 for t in terms.values())
    assert terms["recon"].item() == pytest.approx((out["texture"] - batch["texture"]).abs().mean().item(), rel=1e-5)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(batch["image"])
        assert feats.shape == (6, model.feature_dim)
        assert torch.equal(model.inference_model()(batch["image"]), feats)
    with pytest.raises(ValueError, match="model.texture_tile"):
        model.losses(out, dict(batch, texture=torch.zeros(6, 3, 24, 16)))
    with pytest.raises(KeyError, match="texture"):
        model.losses(out, {k: v for k, v in batch.items() if k != "texture"})


def test_decoder_gradient_reaches_the_encoder(models):
    model, batch = models["san"].train(), tiny_batch()
    model.zero_grad()
    model.losses(model(batch), batch)["recon"].backward()
    assert model.encoder.trunk.stem[0].weight.grad.abs().sum() > 0
    assert model.classifier.net[0].weight.grad is None  # the reconstruction does not touch the ID head
    model.zero_grad()


def test_san_inference_is_the_bare_encoder(models):
    san, image = models["san"], torch.randn(2, 3, 64, 32)
    inference = san.inference_model()
    encoder = GlobalEncoder(CFG)  # the baseline's encoder + pooling, same config
    assert n_params(inference) == n_params(encoder) == n_params(models["baseline"].inference_model())
    assert n_params(san) > n_params(inference) + n_params(san.decoder) - 1
    assert not any(isinstance(m, SADecoder) for m in inference.modules())
    calls = []
    handle = san.decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        assert inference_flops(inference, image) == inference_flops(encoder, image) > 0
        assert inference_flops(san.forward_features, image) == inference_flops(encoder, image)
        assert not calls
    finally:
        handle.remove()
    assert san.feature_dim == inference.feature_dim == 512


def test_san_official_fc_feature():
    cfg = ModelConfig(**{**CFG.__dict__, "san_fc_dim": 16})
    san = build_model("san", 3, cfg).eval()
    with torch.no_grad():
        assert san.forward_features(torch.randn(2, 3, 64, 32)).shape == (2, 16)
    assert n_params(san.inference_model()) == n_params(GlobalEncoder(CFG)) + 512 * 16 + 16 + 2 * 16


def test_dsa_san_inference_equals_dsa(models):
    dsa, dsa_san, image = models["dsa"], models["dsa_san"], torch.randn(2, 3, 64, 32)
    inference = dsa_san.inference_model()
    assert n_params(inference) == n_params(dsa.inference_model())
    assert not any(isinstance(m, SADecoder) for m in inference.modules())
    assert inference_flops(inference, image) == inference_flops(dsa.inference_model(), image) > 0
    assert n_params(dsa_san) == n_params(dsa) + n_params(dsa_san.decoder)


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="decoder_width_mult"):
        from_mapping(ModelConfig, {"decoder_width_mult": 0.0}, "model")
    with pytest.raises(ConfigError, match="texture_tile"):
        from_mapping(ModelConfig, {"texture_tile": 0}, "model")
    with pytest.raises(ConfigError, match="recon_weight"):
        from_mapping(ModelConfig, {"recon_weight": -1.0}, "model")


# --- training reduces the loss ---

@pytest.mark.parametrize("name", ["san", "dsa_san"])
def test_a_few_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    model = build_model(name, 3, CFG).train()
    batch = tiny_batch(seed=1)
    history = loss_history(model, batch, lr=1e-3)
    total = [sum(h.values()) for h in history]
    assert total[-1] < total[0]
    assert history[-1]["recon"] < history[0]["recon"]
    assert history[-1]["decoder_triplet"] < history[0]["decoder_triplet"]
