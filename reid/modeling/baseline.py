"""Baseline (RE+LS) of DSA Table 3: ResNet (last stride 1) -> GAP -> feature, trained with a
label-smoothed ID loss and a batch-hard triplet loss. The interface is documented in reid.modeling.build.

No BNNeck: the DSA paper's baseline predates it, and its ID classifier (two FC layers, the
same as in the dsa model) already separates the ID-loss space from the retrieval feature.
Triplet and retrieval both use the raw GAP feature.
"""

from __future__ import annotations

from torch import Tensor, nn

from reid.losses import batch_hard_triplet, smoothed_cross_entropy
from reid.modeling import MODEL_INPUTS
from reid.modeling.backbone import ResNetTrunk
from reid.modeling.config import ModelConfig
from reid.modeling.heads import IdClassifier, global_avg_pool


class GlobalEncoder(nn.Module):
    """ResNet conv1..conv5_x -> GAP: the baseline's inference model."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.trunk = ResNetTrunk(cfg.backbone, cfg.pretrained, cfg.last_stride, depth=4)
        self.feature_dim = self.trunk.out_channels

    def forward(self, image: Tensor) -> Tensor:
        return global_avg_pool(self.trunk(image))

    forward_features = forward  # the inference module answers the same calls as the model


class Baseline(nn.Module):
    inputs: tuple[str, ...] = MODEL_INPUTS["baseline"]

    def __init__(self, num_classes: int, cfg: ModelConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = GlobalEncoder(cfg) if encoder is None else encoder  # san passes its SA-Enc
        self.feature_dim = self.encoder.feature_dim
        self.classifier = IdClassifier(self.feature_dim, num_classes, cfg.id_head_hidden)

    def forward_features(self, image: Tensor) -> Tensor:
        return self.encoder(image)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        feature = self.encoder(batch["image"])
        return {"feature": feature, "logits": self.classifier(feature)}

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        labels, cfg = batch["label"], self.cfg
        return {
            "id": cfg.id_weight * smoothed_cross_entropy(outputs["logits"], labels, cfg.label_smoothing),
            "triplet": cfg.triplet_weight * batch_hard_triplet(outputs["feature"], labels, cfg.triplet_margin),
        }

    def inference_model(self) -> nn.Module:
        return self.encoder
