"""Model construction: `build_model` (its config, `ModelConfig`, lives in reid.modeling.config).

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
in [-1, 1], the pseudo-texture atlas, never augmented (san, dsa_san). S and T are the caches' (their
Parquet metadata), given to build_model; a model's `inputs` are reid.modeling.MODEL_INPUTS[name].

Models (SPEC §8): "baseline" (reid.modeling.baseline), "baseline2b" and "dsa" (reid.modeling.dsa),
"san" and "dsa_san" (reid.modeling.san; the texture decoder is training-only).
The dsa model also has `forward_fused_features(image, dsap)` -> [z_G, z_L], the "two streams fused" variant,
and `forward_stream_features(image, dsap)` -> {"mf", "fused", "guide"} (adds [d_G, d_L], the DSAG-Stream alone).
"""

from __future__ import annotations

from torch import nn

from reid.modeling import MODEL_NAMES
from reid.modeling.baseline import Baseline
from reid.modeling.config import ModelConfig, check_cache_shapes
from reid.modeling.dsa import DSAReID
from reid.modeling.san import DSASAN, SAN

__all__ = ["MODEL_NAMES", "ModelConfig", "build_model"]


def build_model(name: str, num_classes: int, cfg: ModelConfig, *, dsap_size: int | None = None,
                texture_tile: int | None = None) -> nn.Module:
    """The reID model `name` with ID classifiers over `num_classes` training identities.

    `dsap_size` (S; dsa, dsa_san) and `texture_tile` (T; san, dsa_san) are what the training caches
    hold (reid.data.torch_dataset.cache_shapes), given exactly for the models that read them.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (training identities), got {num_classes}")
    cfg.validate()
    check_cache_shapes(name, dsap_size, texture_tile)
    if name == "baseline":
        return Baseline(num_classes, cfg)
    if name == "baseline2b":
        return DSAReID(num_classes, cfg, with_dsag=False)
    if name == "dsa":
        return DSAReID(num_classes, cfg, with_dsag=True, dsap_size=dsap_size)
    if name == "san":
        return SAN(num_classes, cfg, texture_tile)
    if name == "dsa_san":
        return DSASAN(num_classes, cfg, dsap_size, texture_tile)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
