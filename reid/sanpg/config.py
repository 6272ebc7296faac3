"""The SAN-PG configs: params.yaml sections ``train_sanpg`` and ``texture``, and the architecture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from reid.data.transforms import check_augment_settings
from reid.device import check_device_settings
from reid.engine.optim import check_optim_settings
from reid.modeling.config import Backbone


@dataclass(frozen=True)
class SanPGArch:
    """What rebuilds a trained SAN-PG for inference (kept in model.json)."""

    backbone: str = "resnet18"
    tile: int = 32
    width_mult: float = 1.0
    last_stride: int = 1
    height: int = 128  # network input size
    width: int = 64

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass
class SanPGConfig:
    """params.yaml section ``train_sanpg``. Optimiser defaults follow the official repo (AMSGrad, wd 5e-4)."""

    pit_root: str = "data/synth/pit"  # a PIT-layout folder (images/, textures/ atlases of `tile`)
    backbone: Backbone = "resnet18"
    pretrained: str | None = "hub"  # as models.<m>.pretrained (reid.modeling.config.ModelConfig)
    tile: int = 32
    width_mult: float = 1.0
    last_stride: int = 1
    decoder_init: Literal["official", "pytorch"] = "pytorch"  # see reid.sanpg.model.build_sanpg
    height: int = 128
    width: int = 64
    epochs: int = 8
    batch_size: int = 32
    lr: float = 8e-4
    weight_decay: float = 5e-4
    amsgrad: bool = True
    warmup_epochs: int = 0  # linear warm-up from lr * warmup_factor (per epoch, reid.engine.optim)
    warmup_factor: float = 0.1
    step_epochs: int = 40  # lr x gamma at every multiple of step_epochs
    gamma: float = 0.5
    crop_scale: float = 1.125  # random crop = resize x crop_scale, crop back (1 = off); image only
    flip_p: float = 0.0  # see the package doc: a flip changes the true texture
    erasing_p: float = 0.0
    val_fraction: float = 0.1  # share of texture identities held out
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 64
    n_samples: int = 6  # held-out pairs in samples.png

    def validate(self) -> None:
        if self.backbone not in get_args(Backbone):
            raise ValueError(f"backbone must be one of {', '.join(get_args(Backbone))}, got {self.backbone!r}")
        for name in ("tile", "epochs", "batch_size", "height", "width", "step_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        for name in ("warmup_epochs", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16, got {self.height}x{self.width}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if not 0 < self.width_mult <= 4:
            raise ValueError(f"width_mult must lie in (0, 4], got {self.width_mult}")
        check_optim_settings(self)
        check_augment_settings(self.crop_scale, self.flip_p, self.erasing_p)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        check_device_settings(self.device)

    def arch(self) -> SanPGArch:
        return SanPGArch(self.backbone, self.tile, self.width_mult, self.last_stride, self.height, self.width)


@dataclass
class TextureConfig:
    """params.yaml section ``texture``."""

    batch_size: int = 64
    device: str = "auto"
    num_workers: int = 0  # DataLoader workers decoding crops
    n_samples: int = 8  # test crops in texture_samples.png

    def validate(self) -> None:
        if self.batch_size < 1 or self.n_samples < 1:
            raise ValueError(f"batch_size and n_samples must be >= 1, got {self.batch_size}, {self.n_samples}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        check_device_settings(self.device)
