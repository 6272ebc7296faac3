"""Model configuration: `ModelConfig` (a ``models.<name>`` params section), free of any model code.

The models import it and reid.modeling.build imports the models, so the config lives apart from
both (no import circle). What the data fixes is NOT a knob here: the DSAP image side S and the
pseudo-texture tile T are read from the caches' metadata (reid.data.torch_dataset.cache_shapes) and
passed to build_model beside the config, so `-S dsap.grid=16` changes the cache and the network at
once. `check_cache_shapes` says which model takes which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from reid.modeling import MODEL_INPUTS, MODEL_NAMES

Backbone = Literal["resnet18", "resnet50", "efficientnet_lite0"]  # reid.modeling.backbone.BACKBONES
DecoderTripletDistance = Literal["normalized", "mse"]  # see reid.modeling.san, "Decoder triplet distance"
DECODER_TRIPLET_DISTANCES: tuple[str, ...] = get_args(DecoderTripletDistance)


@dataclass
class ModelConfig:
    backbone: Backbone = "resnet50"
    # a state-dict path (torchvision names for ResNets, timm's for efficientnet_lite0), "imagenet" (ResNet: the
    # torch hub cache if present, as "hub"; efficientnet_lite0: the weights its registry package ships), or null
    pretrained: str | None = "hub"
    last_stride: int = 1            # 1 = last spatial down-sampling removed (backbone layer4 and conv5 heads)
    width_mult: float = 1.0         # DSAG-Stream branch widths (32, 64, 64, 128) x width_mult; heads unaffected
    id_head_hidden: int = 512       # hidden width of each two-FC ID classifier
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    id_weight: float = 1.0          # ID loss on the retrieval/fused features (baseline feature, z_G, z_L)
    mf_id_weight: float = 0.5       # ID loss on f_G and each f_L,i (baseline2b, dsa)
    triplet_weight: float = 1.5     # batch-hard triplet on the retrieval/fused features
    # SAN decoder (san, dsa_san)
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
    # baseline, san: BoT's BNNeck (not the papers'): triplet on the pooled feature, ID loss (one bias-free
    # linear layer) and retrieval on its batch-normalised copy (reid.modeling.heads.BNNeck)
    bnneck: bool = False

    def validate(self) -> None:
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if not 0.0 < self.width_mult <= 4.0:
            raise ValueError(f"width_mult must lie in (0, 4], got {self.width_mult}")
        if self.id_head_hidden < 1:
            raise ValueError(f"id_head_hidden must be >= 1, got {self.id_head_hidden}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.triplet_margin < 0:
            raise ValueError(f"triplet_margin must be >= 0, got {self.triplet_margin}")
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


MIN_DSAP_SIZE = 4  # the DSAG-Stream halves S twice (conv3_x, conv4_x)
# Every trunk down-samples by 16 up to conv4_x: a smaller input leaves its map under 2 x 1 cells (below this a
# network still runs, on padding, and reports numbers that mean nothing).
MIN_INPUT_HEIGHT, MIN_INPUT_WIDTH = 32, 16


def check_input_size(height: int, width: int, prefix: str = "") -> None:
    """The reID networks' input size is at least MIN_INPUT_HEIGHT x MIN_INPUT_WIDTH (ValueError naming `prefix`height)."""
    for name, value, least in (("height", height, MIN_INPUT_HEIGHT), ("width", width, MIN_INPUT_WIDTH)):
        if value < least:
            raise ValueError(f"{prefix}{name} must be >= {least} (the trunks down-sample by 16 before their last "
                             f"stage), got {value}")
CACHE_SHAPES = {"dsap_size": "dsap", "texture_tile": "texture"}  # build_model keyword -> the cache it sizes


def check_cache_shapes(name: str, dsap_size: int | None, texture_tile: int | None) -> None:
    """S given exactly when model `name` trains on DSAP images, T exactly when on textures (MODEL_INPUTS)."""
    if name not in MODEL_INPUTS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    for (key, cache), value, least in zip(CACHE_SHAPES.items(), (dsap_size, texture_tile), (MIN_DSAP_SIZE, 1),
                                          strict=True):
        needed = cache in MODEL_INPUTS[name]
        if needed and value is None:
            raise ValueError(f"model {name!r} needs {key} (from the {cache} cache's metadata)")
        if not needed and value is not None:
            raise ValueError(f"model {name!r} reads no {cache} cache, so it takes no {key} (got {value})")
        if needed and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise ValueError(f"{key} must be an integer >= {least}, got {value!r}")
