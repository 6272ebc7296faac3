"""Model construction: `ModelConfig` (the ``model`` params section) and `build_model`.

Every reID model follows one interface, which the training engine and the evaluation rely on::

    class <Model>(nn.Module):
        inputs: tuple[str, ...]    # batch keys the TRAINING forward needs besides "image"/"label" (dsa: ("dsap",))
        feature_dim: int           # size of forward_features' output
        def forward_features(self, image: Tensor) -> Tensor
            # [B, feature_dim] retrieval embedding (raw, not normalised); runs only inference modules
        def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]
            # training outputs (features and logits)
        def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]
            # named, already-weighted loss terms; the engine sums them
        def inference_model(self) -> nn.Module
            # a submodule (shared weights, not a copy) holding ONLY what forward_features needs;
            # its forward(image) == its forward_features(image) == the model's forward_features(image),
            # and it has the same feature_dim. Export, feature extraction and FLOP counts use it.

Batch keys: "image" float [B, 3, H, W] ImageNet-normalised; "label" long [B] contiguous train labels;
"dsap" float [B, 24, 3, S, S] normalised the same way (dsa, dsa_san); "texture" float [B, 3, 6T, 4T]
in [-1, 1], the pseudo-texture atlas, never augmented (san, dsa_san).

Models (SPEC §8): "baseline" (reid.modeling.baseline), "baseline2b" and "dsa" (reid.modeling.dsa),
"san" and "dsa_san" (reid.modeling.san; the texture decoder is training-only).
The dsa model also has `forward_fused_features(image, dsap)` -> [z_G, z_L], the "two streams fused" variant,
and `forward_stream_features(image, dsap)` -> {"mf", "fused", "guide"} (adds [d_G, d_L], the DSAG-Stream alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from torch import nn

from reid.modeling import MODEL_NAMES

DecoderTripletDistance = Literal["normalized", "mse"]  # see reid.modeling.san, "Decoder triplet distance"
DECODER_TRIPLET_DISTANCES: tuple[str, ...] = get_args(DecoderTripletDistance)


@dataclass
class ModelConfig:
    backbone: Literal["resnet18", "resnet50"] = "resnet50"
    pretrained: str | None = "hub"  # a torchvision state-dict path, "hub" (torch hub cache if present), or null
    last_stride: int = 1            # 1 = last spatial down-sampling removed (backbone layer4 and conv5 heads)
    width_mult: float = 1.0         # DSAG-Stream branch widths (32, 64, 64, 128) x width_mult; heads unaffected
    dsap_size: int = 32             # S of the DSAP images the dsa model expects
    id_head_hidden: int = 512       # hidden width of each two-FC ID classifier
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    id_weight: float = 1.0          # ID loss on the retrieval/fused features (baseline feature, z_G, z_L)
    mf_id_weight: float = 0.5       # ID loss on f_G and each f_L,i (baseline2b, dsa)
    triplet_weight: float = 1.5     # batch-hard triplet on the retrieval/fused features
    # SAN decoder (san, dsa_san)
    texture_tile: int = 32          # T of the pseudo-texture atlas [3, 6T, 4T] in batch["texture"]
    decoder_width_mult: float = 1.0  # SA-Dec widths (512, 256, 64, 32, 16) x this, at least 4
    recon_weight: float = 1.0       # L1 texture reconstruction
    decoder_triplet_weight: float = 1.0  # triplet constraints on the four decoder up-block maps (summed)
    decoder_triplet_margin: float = 0.3  # margin on the distance between decoder maps
    # "normalized": squared distance of L2-normalised maps, in [0, 4]; "mse": the official whole-map
    # MSE, which at these map scales never leaves the margin (reid.modeling.san)
    decoder_triplet_distance: DecoderTripletDistance = "normalized"
    # Controls and variants of dsa / dsa_san that are NOT the paper's (off by default):
    shuffle_dsap: bool = False      # control: each sample gets the DSAP of another sample of its batch (training)
    mf_triplet_weight: float = 0.0  # batch-hard triplet on f_G and f_L too (the paper puts it on z only)
    san_fc_dim: int = 0             # san feature: 0 = GAP (as baseline); 512 = official "resnet50_fc512"

    def validate(self) -> None:
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if not 0.0 < self.width_mult <= 4.0:
            raise ValueError(f"width_mult must lie in (0, 4], got {self.width_mult}")
        if self.dsap_size < 4:
            raise ValueError(f"dsap_size must be >= 4, got {self.dsap_size}")
        if self.id_head_hidden < 1:
            raise ValueError(f"id_head_hidden must be >= 1, got {self.id_head_hidden}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.triplet_margin < 0:
            raise ValueError(f"triplet_margin must be >= 0, got {self.triplet_margin}")
        if self.texture_tile < 1:
            raise ValueError(f"texture_tile must be >= 1, got {self.texture_tile}")
        if not 0.0 < self.decoder_width_mult <= 4.0:
            raise ValueError(f"decoder_width_mult must lie in (0, 4], got {self.decoder_width_mult}")
        if self.decoder_triplet_margin < 0:
            raise ValueError(f"decoder_triplet_margin must be >= 0, got {self.decoder_triplet_margin}")
        if self.decoder_triplet_distance not in DECODER_TRIPLET_DISTANCES:
            raise ValueError(f"decoder_triplet_distance must be one of {DECODER_TRIPLET_DISTANCES}, "
                             f"got {self.decoder_triplet_distance!r}")
        if self.san_fc_dim < 0:
            raise ValueError(f"san_fc_dim must be >= 0 (0 = GAP feature), got {self.san_fc_dim}")
        for name in ("id_weight", "mf_id_weight", "triplet_weight", "recon_weight", "decoder_triplet_weight",
                     "mf_triplet_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def build_model(name: str, num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The reID model `name` with ID classifiers over `num_classes` training identities."""
    from reid.modeling.baseline import Baseline
    from reid.modeling.dsa import DSAReID
    from reid.modeling.san import DSASAN, SAN

    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (training identities), got {num_classes}")
    cfg.validate()
    if name == "baseline":
        return Baseline(num_classes, cfg)
    if name == "baseline2b":
        return DSAReID(num_classes, cfg, with_dsag=False)
    if name == "dsa":
        return DSAReID(num_classes, cfg, with_dsag=True)
    if name == "san":
        return SAN(num_classes, cfg)
    if name == "dsa_san":
        return DSASAN(num_classes, cfg)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
