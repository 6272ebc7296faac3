"""Baseline (RE+LS) of DSA Table 3: ResNet (last stride 1) -> GAP -> feature, trained with a
label-smoothed ID loss and a batch-hard triplet loss. The interface is documented in reid.modeling.build.

By default no BNNeck: the DSA paper's baseline predates it, and its ID classifier (two FC layers,
the same as in the dsa model) already separates the ID-loss space from the retrieval feature;
triplet and retrieval both use the raw GAP feature. ``bnneck: true`` (ModelConfig) is BoT's head
instead: the triplet on the GAP feature, a BN (shift frozen) after it, the ID loss through one
bias-free linear layer and retrieval on the BN'd feature (the BN is part of the inference model).
"""

from __future__ import annotations

from torch import Tensor, nn

from reid.losses import batch_hard_triplet, smoothed_cross_entropy
from reid.modeling import MODEL_INPUTS
from reid.modeling.backbone import build_trunk
from reid.modeling.config import ModelConfig
from reid.modeling.heads import BNNeck, IdClassifier, global_avg_pool, linear_classifier


class GlobalEncoder(nn.Module):
    """The backbone's trunk (ResNet conv1..conv5_x) -> GAP (-> BNNeck): the baseline's inference model."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.trunk = build_trunk(cfg.backbone, cfg.pretrained, cfg.last_stride, depth=4)
        self.feature_dim = self.trunk.out_channels
        self.neck = BNNeck(self.feature_dim) if cfg.bnneck else None

    def pooled(self, image: Tensor) -> Tensor:
        """The pooled feature before the neck (what the triplet loss reads)."""
        return global_avg_pool(self.trunk(image))

    def forward(self, image: Tensor) -> Tensor:
        feature = self.pooled(image)
        return feature if self.neck is None else self.neck(feature)

    forward_features = forward  # the inference module answers the same calls as the model


class Baseline(nn.Module):
    inputs: tuple[str, ...] = MODEL_INPUTS["baseline"]

    def __init__(self, num_classes: int, cfg: ModelConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = GlobalEncoder(cfg) if encoder is None else encoder  # san passes its SA-Enc
        self.feature_dim = self.encoder.feature_dim
        self.classifier = (linear_classifier(self.feature_dim, num_classes) if cfg.bnneck
                           else IdClassifier(self.feature_dim, num_classes, cfg.id_head_hidden))

    def forward_features(self, image: Tensor) -> Tensor:
        return self.encoder(image)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.id_outputs(self.encoder.pooled(batch["image"]))

    def id_outputs(self, pooled: Tensor) -> dict[str, Tensor]:
        """{"feature": the pooled feature (triplet), "logits"}: the ID classifier reads it through the neck."""
        neck = self.encoder.neck
        return {"feature": pooled, "logits": self.classifier(pooled if neck is None else neck(pooled))}

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        labels, cfg = batch["label"], self.cfg
        return {
            "id": cfg.id_weight * smoothed_cross_entropy(outputs["logits"], labels, cfg.label_smoothing),
            "triplet": cfg.triplet_weight * batch_hard_triplet(outputs["feature"], labels, cfg.triplet_margin),
        }

    def inference_model(self) -> nn.Module:
        return self.encoder
