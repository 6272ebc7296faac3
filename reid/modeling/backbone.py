"""ResNet trunks from torchvision with the last spatial down-sampling removable, and
ImageNet weights from a local file only (never a download).

`pretrained`:
* a path to a torchvision ResNet state dict (``torch.load(weights_only=True)``);
* ``"hub"``: torchvision's IMAGENET1K file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
  if it is there, else random init with a warning;
* ``None``: random init, deliberately (no warning).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

# Output channels of layer1..layer4.
STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
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
    if pretrained == "hub":
        path = hub_weights_path(name)
        if path is None:
            warnings.warn(f"no ImageNet weights for {name} in {Path(torch.hub.get_dir()) / 'checkpoints'}; "
                          f"using random init (results will be far below the papers')", stacklevel=3)
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} (parameter model.pretrained)")
    return path


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
        try:
            missing, unexpected = resnet.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ValueError(f"{path} is not a torchvision {name} state dict: {str(err)[:300]}") from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{path} is not a torchvision {name} state dict: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    resnet.fc = nn.Identity()
    if last_stride == 1:
        remove_last_stride(resnet)
    elif last_stride != 2:
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    return resnet


class ResNetTrunk(nn.Module):
    """ResNet conv1 .. layer`depth` as a feature-map extractor (depth 3 = the MF-Stream's conv1..conv4_x)."""

    def __init__(self, name: str, pretrained: str | None, last_stride: int = 1, depth: int = 4):
        super().__init__()
        if depth not in (3, 4):
            raise ValueError(f"depth must be 3 or 4, got {depth}")
        r = load_resnet(name, pretrained, last_stride)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layers = nn.Sequential(*[getattr(r, f"layer{i}") for i in range(1, depth + 1)])
        self.out_channels = STAGE_CHANNELS[name][depth - 1]
        self.backbone = name

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(self.stem(image))

    # --- multi-level output (SAN's decoder skips) ---

    @property
    def level_channels(self) -> dict[str, int]:
        """Output channels of each stage: {"layer1": c1, ..., "layer<depth>": c}."""
        return {f"layer{i}": c for i, c in enumerate(STAGE_CHANNELS[self.backbone][:len(self.layers)], 1)}

    def levels(self, image: Tensor) -> dict[str, Tensor]:
        """Every stage's output map {"layer1": ..., "layer<depth>": ...}; the last one equals forward()."""
        x, maps = self.stem(image), {}
        for i, layer in enumerate(self.layers, 1):
            x = layer(x)
            maps[f"layer{i}"] = x
        return maps
