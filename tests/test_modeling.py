import dataclasses
import warnings

import pytest
import torch
import torchvision
from modelutil import build, loss_history
from torch.utils.flop_counter import FlopCounterMode

from reid.config import ConfigError, from_mapping
from reid.modeling.backbone import ResNetTrunk, load_resnet
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig
from reid.modeling.dsa import DSAGStream, MFStream
from reid.modeling.heads import GroupedBasicBlock, GroupedBottleneck, merge_branches, merge_matrix
from reid.parts import FIRST_MERGE, N_PARTS, PART_GROUPS, PART_NAMES, second_merge

S = 16  # tiny DSAP size for tests
CFG = ModelConfig(backbone="resnet18", pretrained=None, width_mult=0.125, id_head_hidden=32)


def tiny_batch(n_ids=3, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(n_ids * k, 3, 64, 32, generator=g),
        "label": torch.arange(n_ids).repeat_interleave(k),
        "dsap": torch.randn(n_ids * k, N_PARTS, 3, S, S, generator=g),
    }


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build(name, 3, CFG, dsap_size=S) for name in ("baseline", "baseline2b", "dsa")}


# --- config ---

def test_model_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="model: width_mult"):
        from_mapping(ModelConfig, {"width_mult": 0.0}, "model")
    with pytest.raises(ConfigError, match="model.backbone"):
        from_mapping(ModelConfig, {"backbone": "resnet34"}, "model")
    assert from_mapping(ModelConfig, {"pretrained": None}, "model").pretrained is None
    with pytest.raises(ValueError, match="unknown model"):
        build_model("pcb", 3, CFG)


def test_dsap_size_comes_with_the_cache_not_the_config():
    with pytest.raises(ConfigError, match="unknown parameter.*dsap_size"):  # no knob repeats dsap.grid
        from_mapping(ModelConfig, {"dsap_size": 12}, "models.dsa")
    with pytest.raises(ValueError, match="needs dsap_size"):
        build_model("dsa", 3, CFG)
    with pytest.raises(ValueError, match="takes no dsap_size"):
        build_model("baseline2b", 3, CFG, dsap_size=S)
    with pytest.raises(ValueError, match="dsap_size must be an integer >= 4"):
        build_model("dsa", 3, CFG, dsap_size=2)
    model = build_model("dsa", 3, CFG, dsap_size=8).eval()  # the network takes the S it is given
    assert model.dsap_size == 8
    image = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert model.forward_fused_features(image, torch.randn(2, N_PARTS, 3, 8, 8)).shape == (2, 1024)
        with pytest.raises(ValueError, match="S=8"):
            model.forward_fused_features(image, torch.randn(2, N_PARTS, 3, S, S))


# --- shapes and interface ---

@pytest.mark.parametrize("name, dim, inputs", [("baseline", 512, ()), ("baseline2b", 1024, ()),
                                                ("dsa", 1024, ("dsap",))])
def test_shapes_and_interface(models, name, dim, inputs):
    model, batch = models[name], tiny_batch()
    model.train()
    assert model.feature_dim == dim and tuple(model.inputs) == inputs
    out = model(batch)
    terms = model.losses(out, batch)
    assert terms and all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(batch["image"])
        assert feats.shape == (6, dim)
        inference = model.inference_model()
        assert inference.feature_dim == dim
        assert torch.equal(inference(batch["image"]), feats)
        assert torch.equal(inference.forward_features(batch["image"]), feats)


def test_two_branch_outputs(models):
    out = models["dsa"].train()(tiny_batch())
    assert out["f_global"].shape == (6, 512) and out["f_local"].shape == (6, 8 * 64)
    assert out["z_global"].shape == (6, 512) and out["z_local"].shape == (6, 8 * 64)
    assert out["logits_f_local"].shape == (6, 8, 3) and out["logits_z_global"].shape == (6, 3)
    models["dsa"].eval()
    with torch.no_grad():
        b = tiny_batch()
        fused = models["dsa"].forward_fused_features(b["image"], b["dsap"])
    assert fused.shape == (6, 1024)
    with pytest.raises(ValueError, match="dsap_size"):
        models["dsa"](dict(b, dsap=torch.zeros(6, N_PARTS, 3, 2 * S, 2 * S)))
    with pytest.raises(KeyError, match="dsap"):
        models["dsa"]({"image": b["image"], "label": b["label"]})


def test_resnet50_two_branch_sizes_match_the_paper():
    mf = MFStream(ModelConfig(backbone="resnet50", pretrained=None))
    assert (mf.global_dim, mf.local_dim, mf.feature_dim) == (2048, 256, 4096)
    mf.eval()
    with torch.no_grad():
        assert mf(torch.randn(1, 3, 64, 32)).shape == (1, 4096)


@pytest.mark.parametrize("last_stride, size", [(1, (4, 2)), (2, (2, 1))])
def test_last_stride(last_stride, size):
    trunk = ResNetTrunk("resnet18", None, last_stride).eval()
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 32)).shape[2:] == size
    r50 = load_resnet("resnet50", None, last_stride)
    assert r50.layer4[0].conv2.stride == (last_stride, last_stride)
    assert r50.layer4[0].downsample[0].stride == (last_stride, last_stride)


# --- pretrained weights: local files only ---

def test_pretrained_from_path_and_hub(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    loaded = load_resnet("resnet18", str(path))
    assert torch.equal(loaded.conv1.weight, ref.conv1.weight)
    assert torch.equal(loaded.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        load_resnet("resnet18", str(tmp_path / "missing.pth"))
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="not a torchvision resnet18"):
        load_resnet("resnet18", str(tmp_path / "r50.pth"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.warns(UserWarning, match="random init"):
            load_resnet("resnet18", "hub")
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(load_resnet("resnet18", "hub").conv1.weight, ref.conv1.weight)
    finally:
        torch.hub.set_dir(old)


# --- grouped branches equal a loop over torchvision blocks ---

def _branch_of(grouped: torch.nn.Module, ref: torch.nn.Module, g: int) -> torch.nn.Module:
    """torchvision block `ref` loaded with branch g of `grouped` (same parameter names, sliced outputs)."""
    src = grouped.state_dict()
    with torch.no_grad():
        for key, p in ref.state_dict().items():
            if p.dim():  # skip num_batches_tracked
                p.copy_(src[key][g * len(p):(g + 1) * len(p)])
    return ref


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("shared, stride", [(False, 1), (False, 2), (True, 1), (True, 2)])
def test_grouped_blocks_equal_branch_loop(kind, shared, stride):
    torch.manual_seed(1)
    groups, cin, width, cout = 3, 4, 2, 8
    tv = torchvision.models.resnet
    shortcut = lambda: torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           torch.nn.BatchNorm2d(cout))
    if kind == "basic":
        grouped = GroupedBasicBlock(cin, cout, groups, stride, shared)
        make = lambda: tv.BasicBlock(cin, cout, stride, shortcut())
    else:
        grouped = GroupedBottleneck(cin, width, cout, groups, stride, shared)
        make = lambda: tv.Bottleneck(cin, cout // 4, stride, shortcut())  # width = planes = cout / 4 = 2
    for m in grouped.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(5, cin if shared else groups * cin, 8, 6)
    for train in (True, False):
        grouped.train(train)
        loop = [_branch_of(grouped, make(), g).train(train)(x if shared else x[:, g * cin:(g + 1) * cin])
                for g in range(groups)]
        with torch.no_grad():
            assert torch.allclose(grouped(x), torch.cat(loop, 1), atol=1e-5)


# --- DSAG merging follows the SPEC's pairs ---

def _base(name: str, drop: tuple[str, ...]) -> str:
    return "_".join(t for t in name.split("_") if t not in drop)


def test_merge_groups_are_left_right_then_front_back_pairs():
    first = [{_base(PART_NAMES[p], ("l", "r")) for p in group} for group in FIRST_MERGE]
    assert all(len(names) == 1 for names in first) and len({n for s in first for n in s}) == 13
    assert sorted(len(g) for g in FIRST_MERGE) == [1, 1] + [2] * 11
    second = [{_base(PART_NAMES[p], ("l", "r", "front", "back")) for i in group for p in FIRST_MERGE[i]}
              for group in second_merge()]
    assert all(len(names) == 1 for names in second)
    assert [s.pop() for s in second] == ["torso", "upper_leg", "lower_leg", "upper_arm", "lower_arm",
                                        "hand", "foot", "head"]


def test_merge_branches_sums_exactly_the_listed_branches():
    groups = ((0, 3), (1,), (2, 4))
    x = torch.arange(5.0).repeat_interleave(2).view(1, 10, 1, 1) * torch.ones(1, 10, 2, 3)  # branch b = b
    out = merge_branches(x, merge_matrix(groups, 5))
    assert out.shape == (1, 6, 2, 3)
    assert out[0, :, 0, 0].tolist() == [3.0, 3.0, 1.0, 1.0, 6.0, 6.0]
    with pytest.raises(ValueError, match="partition"):
        merge_matrix(((0, 1), (1, 2)), 3)


def test_dsag_part_reaches_only_its_merged_maps():
    torch.manual_seed(0)
    dsag = DSAGStream(16, 4, width_mult=0.125).eval()
    for m in dsag.modules():  # random BN statistics so no branch is accidentally inert
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    dsap = torch.zeros(N_PARTS + 1, N_PARTS, 3, 8, 8)
    for p in range(N_PARTS):
        dsap[p + 1, p] = torch.randn(3, 8, 8)  # sample p+1: only part p+1 is non-zero
    with torch.no_grad():
        m13, m8 = dsag.merged_maps(dsap)
    m13 = m13.view(len(dsap), len(FIRST_MERGE), -1)
    m8 = m8.view(len(dsap), len(PART_GROUPS), -1)
    for part in range(1, N_PARTS + 1):
        changed13 = {i for i in range(len(FIRST_MERGE)) if not torch.equal(m13[part, i], m13[0, i])}
        changed8 = {i for i in range(len(PART_GROUPS)) if not torch.equal(m8[part, i], m8[0, i])}
        assert changed13 == {i for i, g in enumerate(FIRST_MERGE) if part in g}
        assert changed8 == {i for i, g in enumerate(PART_GROUPS) if part in g}


# --- inference model: MF-Stream only ---

def test_dsa_inference_model_equals_baseline2b_cost(models):
    dsa, b2b = models["dsa"], models["baseline2b"]
    n_params = lambda m: sum(p.numel() for p in m.parameters())
    assert n_params(dsa.inference_model()) == n_params(b2b.inference_model())
    assert n_params(dsa) > n_params(dsa.inference_model())
    dsag_ids = {id(p) for p in dsa.dsag.parameters()}
    assert not dsag_ids & {id(p) for p in dsa.inference_model().parameters()}
    calls = []
    handle = dsa.dsag.register_forward_hook(lambda *a: calls.append(1))
    image = torch.randn(2, 3, 64, 32)
    flops = []
    try:
        for model in (dsa, b2b):
            model.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model.inference_model()(image)
                model.forward_features(image)
            flops.append(counter.get_total_flops())
        assert flops[0] == flops[1] > 0 and not calls
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            dsa.train()(tiny_batch())
        assert calls and counter.get_total_flops() > flops[0]
    finally:
        handle.remove()


# --- training reduces the loss ---

@pytest.mark.parametrize("name", ["baseline", "baseline2b", "dsa"])
def test_a_few_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    model = build(name, 3, CFG, dsap_size=S).train()
    batch = tiny_batch(seed=1)
    history = loss_history(model, batch, lr=1e-4)
    total = [sum(h.values()) for h in history]
    id_total = [sum(v for k, v in h.items() if k.startswith("id")) for h in history]
    assert total[-1] < 0.85 * total[0], total
    assert id_total[-1] < id_total[0], id_total


def test_no_hard_coded_device_and_autocast():
    """Meta tensors fail on any tensor created on a fixed device: a CPU-only proxy for CUDA readiness."""
    model = build("dsa", 3, CFG, dsap_size=S).to("meta").train()
    batch = {k: v.to("meta") for k, v in tiny_batch().items()}
    terms = model.losses(model(batch), batch)
    assert all(t.device.type == "meta" for t in terms.values())
    model = build("dsa", 3, CFG, dsap_size=S).train()
    batch = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.losses(model(batch), batch)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())


def test_shuffled_dsap_control_feeds_other_samples_guides_in_training_only():
    torch.manual_seed(0)
    plain = build("dsa", 3, CFG, dsap_size=S)
    control = build("dsa", 3, dataclasses.replace(CFG, shuffle_dsap=True), dsap_size=S)
    control.load_state_dict(plain.state_dict())
    batch = tiny_batch()
    plain.eval(), control.eval()
    with torch.no_grad():  # evaluation: the control changes nothing
        assert torch.equal(plain(batch)["z_global"], control(batch)["z_global"])
    control.train()
    seen = []
    control.dsag.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    torch.manual_seed(1)
    control(batch)
    assert not torch.equal(seen[0], batch["dsap"])  # other samples' DSAP images ...
    assert sorted(seen[0].flatten(1).sum(1).tolist()) == pytest.approx(sorted(batch["dsap"].flatten(1).sum(1).tolist()))


def test_mf_triplet_variant_adds_triplets_on_f_only_when_asked():
    batch = tiny_batch()
    paper = build("dsa", 3, CFG, dsap_size=S)
    assert not any(k.startswith("triplet_f") for k in paper.losses(paper(batch), batch))
    variant = build("dsa", 3, dataclasses.replace(CFG, mf_triplet_weight=1.5), dsap_size=S)
    terms = variant.losses(variant(batch), batch)
    assert {"triplet_f_global", "triplet_f_local"} <= set(terms) and terms["triplet_f_global"].item() >= 0


# --- BoT's BNNeck (baseline, san) ---

@pytest.mark.parametrize("name", ["baseline", "san"])
def test_bnneck_triplet_reads_the_pooled_feature_id_and_retrieval_its_bn_copy(name):
    cfg = dataclasses.replace(CFG, bnneck=True, decoder_width_mult=0.125)
    model = build(name, 3, cfg)
    encoder = model.inference_model()
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.bias is None
    assert not encoder.neck.bn.bias.requires_grad  # BoT freezes the neck's shift
    b = tiny_batch()
    b["texture"] = torch.rand(6, 3, 48, 32) * 2 - 1
    out = model(b)
    pooled = encoder.pooled(b["image"])
    assert torch.allclose(out["feature"], pooled, atol=1e-5)
    model.eval()
    with torch.no_grad():
        feature = model.forward_features(b["image"])
        expected = encoder.neck.bn(encoder.pooled(b["image"]))  # eval BN: running statistics
    assert torch.allclose(feature, expected, atol=1e-5) and not torch.allclose(feature, pooled, atol=1e-3)


def test_without_bnneck_the_retrieval_feature_is_the_pooled_one():
    model = build("baseline", 3, CFG).eval()
    b = tiny_batch()
    with torch.no_grad():
        assert model.inference_model().neck is None
        assert torch.equal(model.forward_features(b["image"]), model.inference_model().pooled(b["image"]))
