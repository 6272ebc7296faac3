"""DSA-reID (CVPR 2019, §3.2, Table 1, §4.2) and its "Baseline (Two branches)".

* MF-Stream: ResNet conv1..conv4_x -> F; global branch = the backbone's conv5_x design (random
  init, last stride 1) -> GAP -> f_G; 8 local branches, conv5_x with 1/8 of the channels ->
  GAP -> f_L,i; f_L = [f_L,1 .. f_L,8]. Sizes: resnet50 2048 + 8x256; resnet18 512 + 8x64.
  With efficientnet_lite0 (ImageNet): F = its stride-16 map (112 channels), the global branch = its
  remaining blocks with their ImageNet weights (1280), the local branches 2 BasicBlocks of 1280/8 = 160.
* DSAG-Stream (training only): 24 part branches from scratch on the DSAP images, run as
  grouped convolutions: conv1 5x5 (32), conv2 3x3 (64), conv3_x 2 BasicBlocks (64, stride 2),
  merge 24 -> 13 (reid.parts.FIRST_MERGE, element-wise add), conv4_x 2 BasicBlocks (128,
  stride 2), merge 13 -> 8 (reid.parts.second_merge()); head conv5_g = 2 BasicBlocks of f_G's
  width on the 8 concatenated maps -> GAP -> d_G; conv5_l = per group 2 BasicBlocks of f_L,i's
  width -> GAP -> d_L. Branch widths x `width_mult`; head widths always match f_G / f_L,i.
* Fusion z_G = f_G + d_G, z_L = f_L + d_L.
* Losses (weights from ModelConfig, paper values): ID on f_G and on each f_L,i (0.5 each);
  ID (1.0) and batch-hard triplet (1.5) on z_G and on z_L. Each ID classifier is two FC layers.
* Inference: MF-Stream only, [f_G, f_L]; `forward_fused_features` gives [z_G, z_L], and
  `forward_stream_features` all three of [f_G, f_L], [z_G, z_L] and [d_G, d_L] in one pass.

"baseline2b" is this model without the DSAG-Stream: z = f, so it keeps exactly the same
classifiers and loss terms (the z classifiers then see f_G and f_L); dsa vs baseline2b
isolates the DSAG-Stream. The interface is documented in reid.modeling.build.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reid.losses import batch_hard_triplet, smoothed_cross_entropy
from reid.modeling import MODEL_INPUTS
from reid.modeling.backbone import RESNETS, build_trunk
from reid.modeling.config import ModelConfig
from reid.modeling.heads import (
    IdClassifier,
    TwoBranchHead,
    basic_stage,
    branch_conv,
    global_avg_pool,
    merge_branches,
    merge_matrix,
)
from reid.parts import FIRST_MERGE, N_PARTS, PART_GROUPS, second_merge

N_LOCAL = len(PART_GROUPS)  # 8 local branches in both streams


class MFStream(nn.Module):
    """The trunk up to stride 16 (ResNet conv1..conv4_x) + two-branch head; forward(image) = [f_G, f_L]
    (the inference model). ResNet: the global branch is the paper's random-init conv5_x. Other backbones
    (ImageNet EfficientNet-Lite0): the trunk's own remaining blocks, weights included, are the global branch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.backbone in RESNETS:
            self.trunk, global_branch = build_trunk(cfg.backbone, cfg.pretrained, depth=3), None
        else:
            self.trunk = build_trunk(cfg.backbone, cfg.pretrained, cfg.last_stride, depth=4)
            global_branch = self.trunk.detach_last_layer()
        self.head = TwoBranchHead(cfg.backbone, self.trunk.out_channels, N_LOCAL, cfg.last_stride, global_branch)
        self.global_dim, self.local_dim = self.head.global_dim, self.head.local_dim
        self.feature_dim = self.global_dim + N_LOCAL * self.local_dim

    def streams(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(f_G [B, global_dim], f_L [B, 8 * local_dim])."""
        return self.head(self.trunk(image))

    def forward(self, image: Tensor) -> Tensor:
        return torch.cat(self.streams(image), dim=1)

    forward_features = forward  # the inference module answers the same calls as the model


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, round(channels * width_mult))


class DSAGStream(nn.Module):
    """DSAG-Stream of DSA Table 1: DSAP images [B, 24, 3, S, S] -> (d_G, d_L)."""

    def __init__(self, global_dim: int, local_dim: int, width_mult: float = 1.0):
        super().__init__()
        n = N_PARTS
        c1, c2, c3, c4 = (_scaled(c, width_mult) for c in (32, 64, 64, 128))
        self.stem = nn.Sequential(  # conv1 5x5 and conv2 3x3 of every part branch
            branch_conv(n * 3, n * c1, 5, 1, n, n), nn.BatchNorm2d(n * c1), nn.ReLU(inplace=True),
            branch_conv(n * c1, n * c2, 3, 1, n, n), nn.BatchNorm2d(n * c2), nn.ReLU(inplace=True),
        )
        self.conv3 = basic_stage(c2, c3, 2, groups=n, stride=2)
        # Branch b holds part b + 1; the merges are given in reid.parts.
        first = tuple(tuple(p - 1 for p in group) for group in FIRST_MERGE)
        self.register_buffer("merge1", merge_matrix(first, n), persistent=False)
        self.conv4 = basic_stage(c3, c4, 2, groups=len(first), stride=2)
        second = second_merge()
        self.register_buffer("merge2", merge_matrix(second, len(first)), persistent=False)
        self.conv5_g = basic_stage(len(second) * c4, global_dim, 2)
        self.conv5_l = basic_stage(c4, local_dim, 2, groups=len(second))

    def merged_maps(self, dsap: Tensor) -> tuple[Tensor, Tensor]:
        """(after the first merge [B, 13*c3, S/2, S/2], after the second merge [B, 8*c4, S/4, S/4])."""
        if dsap.dim() != 5 or dsap.shape[1:3] != (N_PARTS, 3):
            raise ValueError(f"DSAP batch must be [B, {N_PARTS}, 3, S, S], got {tuple(dsap.shape)}")
        b, _, _, h, w = dsap.shape
        x = self.conv3(self.stem(dsap.reshape(b, N_PARTS * 3, h, w)))
        m13 = merge_branches(x, self.merge1)
        m8 = merge_branches(self.conv4(m13), self.merge2)
        return m13, m8

    def forward(self, dsap: Tensor) -> tuple[Tensor, Tensor]:
        """(d_G [B, global_dim], d_L [B, 8 * local_dim], group-major as f_L)."""
        _, d = self.merged_maps(dsap)
        return global_avg_pool(self.conv5_g(d)), global_avg_pool(self.conv5_l(d))


class DSAReID(nn.Module):
    """dsa (with_dsag=True) and baseline2b (with_dsag=False); see the module doc."""

    def __init__(self, num_classes: int, cfg: ModelConfig, with_dsag: bool = True, dsap_size: int | None = None):
        super().__init__()
        if with_dsag and dsap_size is None:
            raise ValueError("the dsa model needs dsap_size: S of the DSAP cache it trains on")
        self.cfg = cfg
        self.dsap_size = dsap_size if with_dsag else None  # S of batch["dsap"]: the DSAP cache's
        self.mf = MFStream(cfg)
        g, loc = self.mf.global_dim, self.mf.local_dim
        self.dsag = DSAGStream(g, loc, cfg.width_mult) if with_dsag else None
        self.inputs: tuple[str, ...] = MODEL_INPUTS["dsa" if with_dsag else "baseline2b"]
        self.feature_dim = self.mf.feature_dim
        h = cfg.id_head_hidden
        self.cls_f_global = IdClassifier(g, num_classes, h)
        self.cls_f_local = nn.ModuleList(IdClassifier(loc, num_classes, h) for _ in range(N_LOCAL))
        self.cls_z_global = IdClassifier(g, num_classes, h)
        self.cls_z_local = IdClassifier(N_LOCAL * loc, num_classes, h)

    def forward_features(self, image: Tensor) -> Tensor:
        return self.mf(image)

    def forward_fused_features(self, image: Tensor, dsap: Tensor) -> Tensor:
        """[z_G, z_L]: the "two streams fused" variant (needs the DSAP images at test time)."""
        return self.forward_stream_features(image, dsap)["fused"]

    def forward_stream_features(self, image: Tensor, dsap: Tensor) -> dict[str, Tensor]:
        """One pass of both streams: {"mf": [f_G, f_L] (= forward_features), "fused": [z_G, z_L],
        "guide": [d_G, d_L] (the DSAG-Stream alone)}, each [B, feature_dim]."""
        if self.dsag is None:
            raise RuntimeError("baseline2b has no DSAG-Stream: its fused features are forward_features'")
        f_g, f_l = self.mf.streams(image)
        d_g, d_l = self.dsag(self._checked_dsap(dsap))
        return {"mf": torch.cat([f_g, f_l], dim=1), "fused": torch.cat([f_g + d_g, f_l + d_l], dim=1),
                "guide": torch.cat([d_g, d_l], dim=1)}

    def _checked_dsap(self, dsap: Tensor) -> Tensor:
        s = self.dsap_size
        if dsap.dim() != 5 or tuple(dsap.shape[1:]) != (N_PARTS, 3, s, s):
            raise ValueError(f"batch['dsap'] must be [B, {N_PARTS}, 3, {s}, {s}] (the model's dsap_size S={s}), "
                             f"got {tuple(dsap.shape)}")
        return dsap

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.fused_outputs(*self.mf.streams(batch["image"]), batch)

    def fused_outputs(self, f_g: Tensor, f_l: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Fused features and all ID logits from the MF-Stream's f_G, f_L (+ the DSAG-Stream's, when built)."""
        if self.dsag is None:
            z_g, z_l = f_g, f_l
        else:
            if "dsap" not in batch:
                raise KeyError("the dsa models need batch['dsap'] (DSAP images [B, 24, 3, S, S])")
            dsap = self._checked_dsap(batch["dsap"])
            if self.cfg.shuffle_dsap and self.training:  # the control: the guide no longer describes the sample
                dsap = dsap[torch.randperm(len(dsap)).to(dsap.device)]  # torch's RNG: seeded per epoch by the engine
            d_g, d_l = self.dsag(dsap)
            z_g, z_l = f_g + d_g, f_l + d_l
        parts = f_l.view(len(f_l), N_LOCAL, -1)
        return {
            "f_global": f_g, "f_local": f_l, "z_global": z_g, "z_local": z_l,
            "logits_f_global": self.cls_f_global(f_g),
            "logits_f_local": torch.stack([cls(parts[:, i]) for i, cls in enumerate(self.cls_f_local)], dim=1),
            "logits_z_global": self.cls_z_global(z_g),
            "logits_z_local": self.cls_z_local(z_l),
        }

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        labels, cfg = batch["label"], self.cfg
        eps, margin = cfg.label_smoothing, cfg.triplet_margin
        local_logits = outputs["logits_f_local"]  # [B, 8, C]; sum over parts of each part's mean CE
        local_ce = smoothed_cross_entropy(local_logits.flatten(0, 1), labels.repeat_interleave(N_LOCAL), eps)
        return {
            "id_f_global": cfg.mf_id_weight * smoothed_cross_entropy(outputs["logits_f_global"], labels, eps),
            "id_f_local": cfg.mf_id_weight * N_LOCAL * local_ce,
            "id_z_global": cfg.id_weight * smoothed_cross_entropy(outputs["logits_z_global"], labels, eps),
            "id_z_local": cfg.id_weight * smoothed_cross_entropy(outputs["logits_z_local"], labels, eps),
            "triplet_z_global": cfg.triplet_weight * batch_hard_triplet(outputs["z_global"], labels, margin),
            "triplet_z_local": cfg.triplet_weight * batch_hard_triplet(outputs["z_local"], labels, margin),
        } | self._mf_triplet_terms(outputs, labels)

    def _mf_triplet_terms(self, outputs: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """The not-the-paper's variant (mf_triplet_weight > 0): batch-hard triplet on f_G and f_L as well."""
        w, margin = self.cfg.mf_triplet_weight, self.cfg.triplet_margin
        if w == 0:
            return {}
        return {"triplet_f_global": w * batch_hard_triplet(outputs["f_global"], labels, margin),
                "triplet_f_local": w * batch_hard_triplet(outputs["f_local"], labels, margin)}

    def inference_model(self) -> nn.Module:
        return self.mf
