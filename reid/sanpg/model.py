"""Building SAN-PG, and its files in the artifact layout of `reid.engine.artifacts`.

    <folder>/model.pt          the network's state dict, tensors only
    <folder>/model.json        {"format": "reid-sanpg/v1", "arch": SanPGArch, "mean_texture": "mean_texture.pt"}
    <folder>/mean_texture.pt   {"mean_texture": float [3, 6T, 4T]}: the mean training texture, the
                               texture stage's floor to beat

The mean texture is a statistic of the training split, not part of the network: kept apart, model.pt
stays the exact state dict `load_state_dict` takes (strict), and model.json stays small text.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from reid.engine.artifacts import INFO_FILE, MODEL_FILE, NetworkFolder, read_info, save_network
from reid.engine.checkpoint import load_checkpoint, save_weights
from reid.parts import atlas_shape
from reid.sanpg.config import SanPGArch

FORMAT = "reid-sanpg/v1"
MEAN_TEXTURE_FILE = "mean_texture.pt"


def build_sanpg(arch: SanPGArch, pretrained: str | None = None, decoder_init: str = "official") -> nn.Module:
    """SANPG of reid.modeling.san. decoder_init "pytorch" resets the decoder's convs and BNs to PyTorch's
    defaults: the official init (Xavier gain 0.02) shrinks the signal ~50x per up-convolution, so the
    output starts as a constant and a CPU-budget run (a few hundred steps) never leaves it."""
    from reid.modeling.san import SANPG  # the SA-Enc + SA-Dec of SPEC §7

    model = SANPG(arch.backbone, pretrained, arch.tile, width_mult=arch.width_mult, last_stride=arch.last_stride)
    if decoder_init == "pytorch":
        for module in model.decoder.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()
    elif decoder_init != "official":
        raise ValueError(f"decoder_init must be official or pytorch, got {decoder_init!r}")
    return model


def save_sanpg(folder: NetworkFolder, model: nn.Module, arch: SanPGArch, mean: torch.Tensor) -> None:
    """model.pt, model.json and mean_texture.pt in `folder.root`, each atomic; identical contents, identical bytes."""
    save_network(folder, model.state_dict(),
                 {"format": FORMAT, "arch": dataclasses.asdict(arch), "mean_texture": MEAN_TEXTURE_FILE})
    save_weights(folder.root / MEAN_TEXTURE_FILE, {"mean_texture": mean})


def load_sanpg(root: str | os.PathLike) -> tuple[nn.Module, SanPGArch, torch.Tensor]:
    """(model in eval mode on CPU, its architecture, the mean training texture) from `save_sanpg`'s folder."""
    root = Path(root)
    info_path, model_path, mean_path = root / INFO_FILE, root / MODEL_FILE, root / MEAN_TEXTURE_FILE
    for path in (info_path, model_path, mean_path):
        if not path.is_file():
            raise FileNotFoundError(f"SAN-PG model file not found: {path} (run the train_sanpg stage)")
    info = read_info(info_path, FORMAT)
    try:
        arch = SanPGArch(**info["arch"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{info_path}: no valid SAN-PG architecture ({err})") from None
    model = build_sanpg(arch)
    try:
        model.load_state_dict(load_checkpoint(model_path))
    except RuntimeError as err:
        raise ValueError(f"{model_path} does not fit the architecture of {info_path}: {str(err)[:300]}") from None
    mean = load_checkpoint(mean_path).get("mean_texture")
    expected = (3, *atlas_shape(arch.tile)[:2])
    if not isinstance(mean, torch.Tensor) or tuple(mean.shape) != expected:
        raise ValueError(f"{mean_path}: expected a 'mean_texture' tensor of shape {expected}")
    return model.eval(), arch, mean.float()
