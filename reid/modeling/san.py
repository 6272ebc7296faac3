"""SAN (AAAI 2020): the texture decoder SA-Dec, SAN-PG, and the reID models "san" and "dsa_san".

* SA-Dec (official repo's ConvResDecoder, SPEC §7): 1x1 conv-BN-ReLU reduce layer4 to 512 and add
  a 1x1 embedding of layer3; four up-blocks 512->256 (+ 1x1 embedding of layer2), 256->64
  (+ embedding of layer1), 64->32, 32->16; each up-block = residual block (conv3x3-BN-ReLU-
  conv3x3-BN + identity) -> ReLU -> bilinear x2 -> reflection pad 1 -> conv3x3. Final reflection
  pad 3 + conv7x7 -> 3 channels -> tanh (the targets lie in [-1, 1]; the official repo leaves the
  output unbounded), resized bilinearly to the atlas (6T, 4T) of reid.parts. No transposed convs.
  Widths x `width_mult` (at least 4). Init as the official repo: Xavier normal gain 0.02, BN
  weight N(1, 0.02).
* SAN-PG = SA-Enc (ResNet, last stride 1) + SA-Dec, image -> texture (trained elsewhere, L1 only).
* "san": SA-Enc -> GAP (-> optional Linear+BN+ReLU, `san_fc_dim`, the official "fc512") -> feature
  with the baseline's reID losses (label-smoothed CE through the two-FC classifier, batch-hard
  triplet); SA-Dec on the encoder maps with an L1 loss to the pseudo texture (batch "texture") and
  batch-hard triplet constraints on the four up-block outputs (distance: see below).
* "dsa_san" (ours): the dsa model (MF-Stream + DSAG-Stream) + SA-Dec on the MF-Stream's conv4 map F,
  skips from the trunk's layer1..layer3 (F stands in for layer4; layer3 is F too).
Both drop the decoder at inference. The model interface is documented in reid.modeling.build.

Decoder triplet mining: the official repo picks, per identity, one fixed (anchor, positive,
negative) triple through batch offsets that assume K = 4 and sums them. We mine with the labels:
for every anchor with a positive and a negative in the batch, the hardest positive (largest
distance) and hardest negative (smallest distance), relu(d_ap - d_an + margin), averaged over those
anchors and summed over the four levels - valid for any P x K batch with K >= 2, and independent of P.

Decoder triplet distance (deviation from the official code): the official repo uses the MSE over
whole maps with margin 0.3. Measured on the default profile, decoder maps of that init lie
2e-5..6e-4 apart in MSE, so d_ap - d_an + 0.3 never leaves the margin: the loss sat at 0.3 per level
(1.2 in all) for every epoch and its gradient only pushed all maps apart alike. By default (ModelConfig
``decoder_triplet_distance="normalized"``) we take the squared Euclidean distance between the
per-sample L2-normalised flattened maps, 2 - 2 cos, which lies in [0, 4] whatever the maps' scale,
so the paper's margin 0.3 is on the scale of the distances. ``"mse"`` keeps the official choice.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.modeling import MODEL_INPUTS
from reid.modeling.backbone import build_trunk
from reid.modeling.baseline import Baseline
from reid.modeling.config import DECODER_TRIPLET_DISTANCES, DecoderTripletDistance, ModelConfig
from reid.modeling.dsa import DSAReID
from reid.modeling.heads import BNNeck, global_avg_pool
from reid.parts import atlas_shape

LEVELS = ("layer1", "layer2", "layer3", "layer4")
DECODER_WIDTHS = (512, 256, 64, 32, 16)  # reduced layer4, then the four up-block outputs


# --- SA-Dec ---

def _conv_bn_relu_1x1(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """x + BN(conv3x3(ReLU(BN(conv3x3(x))))) (no activation after the sum: the up-block applies it)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class UpBlock(nn.Module):
    """Residual block -> ReLU -> bilinear x2 -> reflection pad -> conv3x3 (no checkerboard artefacts)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.res = ResidualBlock(in_ch)
        self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.res(x))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


def _add_resized(x: Tensor, skip: Tensor) -> Tensor:
    """x + skip, the skip resized bilinearly when the sizes differ (last stride 2, odd input sizes)."""
    if skip.shape[-2:] != x.shape[-2:]:
        skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x + skip


def init_decoder_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The official SAN decoder init: convs Xavier normal (gain 0.02), biases 0; BN weight N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class SADecoder(nn.Module):
    """SA-Dec: encoder maps {"layer1".."layer4"} -> (texture [B, 3, 6T, 4T] in [-1, 1], four up-block outputs)."""

    def __init__(self, channels: dict[str, int], atlas_size: tuple[int, int], width_mult: float = 1.0):
        super().__init__()
        missing = [k for k in LEVELS if k not in channels]
        if missing:
            raise ValueError(f"SADecoder needs the channels of {', '.join(LEVELS)}; missing {missing}")
        if not width_mult > 0:
            raise ValueError(f"decoder width_mult must be > 0, got {width_mult}")
        if len(atlas_size) != 2 or min(atlas_size) < 1:
            raise ValueError(f"atlas_size must be (height, width), got {atlas_size}")
        self.atlas_size = (int(atlas_size[0]), int(atlas_size[1]))
        w0, w1, w2, w3, w4 = (max(4, round(w * width_mult)) for w in DECODER_WIDTHS)
        self.widths = (w1, w2, w3, w4)
        self.reduce4 = _conv_bn_relu_1x1(channels["layer4"], w0)
        self.embed3 = _conv_bn_relu_1x1(channels["layer3"], w0)
        self.embed2 = _conv_bn_relu_1x1(channels["layer2"], w1)
        self.embed1 = _conv_bn_relu_1x1(channels["layer1"], w2)
        self.up = nn.ModuleList([UpBlock(w0, w1), UpBlock(w1, w2), UpBlock(w2, w3), UpBlock(w3, w4)])
        self.final = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w4, 3, 7))
        init_decoder_weights(self)

    def forward(self, feats: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(texture [B, 3, 6T, 4T] in [-1, 1], [up1, up2, up3, up4] outputs for the decoder triplets)."""
        x = _add_resized(self.reduce4(feats["layer4"]), self.embed3(feats["layer3"]))
        skips = (self.embed2(feats["layer2"]), self.embed1(feats["layer1"]), None, None)
        ups = []
        for block, skip in zip(self.up, skips, strict=True):
            x = block(x)
            ups.append(x)
            if skip is not None:  # the official repo adds the skip after taking the triplet map
                x = _add_resized(x, skip)
        texture = torch.tanh(self.final(x))
        if tuple(texture.shape[-2:]) != self.atlas_size:
            texture = F.interpolate(texture, size=self.atlas_size, mode="bilinear", align_corners=False)
        return texture, ups


class SANPG(nn.Module):
    """SAN-PG: SA-Enc (the backbone's trunk, layer1..layer4) + SA-Dec; image -> texture [B, 3, 6T, 4T] in [-1, 1]."""

    def __init__(self, backbone: str, pretrained: str | None, tile: int, width_mult: float = 1.0,
                 last_stride: int = 1):
        super().__init__()
        if tile < 1:
            raise ValueError(f"texture tile must be >= 1, got {tile}")
        self.encoder = build_trunk(backbone, pretrained, last_stride, depth=4)
        self.decoder = SADecoder(self.encoder.level_channels, atlas_shape(tile)[:2], width_mult)

    def forward(self, image: Tensor) -> Tensor:
        return self.decoder(self.encoder.levels(image))[0]


# --- decoder losses ---

def _pairwise_squared_distances(x: Tensor) -> Tensor:
    """[B, B] squared Euclidean distances between the rows of x [B, D] (fp32, autocast off)."""
    x = x.float()
    device = x.device.type
    with torch.autocast(device_type=device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
        x = x - x.mean(0, keepdim=True).detach()  # distances are shift-invariant; centring limits cancellation
        sq = x.pow(2).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    return d2.clamp_min(0.0)


def pairwise_mse(maps: Tensor) -> Tensor:
    """[B, B] mean squared difference between whole maps [B, ...] (the official decoder distance)."""
    x = maps.flatten(1)
    return _pairwise_squared_distances(x) / x.shape[1]


def pairwise_normalized_distance(maps: Tensor) -> Tensor:
    """[B, B] squared distance between the maps [B, ...] flattened and L2-normalised, in [0, 4]
    (2 - 2 cos; invariant to scaling a map; an all-zero map stays zero)."""
    return _pairwise_squared_distances(F.normalize(maps.flatten(1).float(), dim=1))


def pairwise_decoder_distance(maps: Tensor, distance: DecoderTripletDistance = "normalized") -> Tensor:
    """[B, B] decoder-triplet distances of `distance` kind ("normalized" or the official "mse")."""
    if distance == "normalized":
        return pairwise_normalized_distance(maps)
    if distance == "mse":
        return pairwise_mse(maps)
    raise ValueError(f"decoder triplet distance must be one of {DECODER_TRIPLET_DISTANCES}, got {distance!r}")


def decoder_triplet(maps: Tensor, labels: Tensor, margin: float = 0.3,
                    distance: DecoderTripletDistance = "normalized") -> Tensor:
    """Batch-hard triplet on pairwise_decoder_distance(maps, distance), averaged over anchors with a
    positive and a negative (a batch with none gives a zero in the graph); any number per identity."""
    if maps.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise ValueError(f"decoder_triplet needs maps [B, ...] and labels [B], got {tuple(maps.shape)} "
                         f"and {tuple(labels.shape)}")
    dist = pairwise_decoder_distance(maps, distance)
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    valid = positive.any(1) & (~same).any(1)
    per_anchor = torch.where(valid, F.relu(hardest_pos - hardest_neg + margin), torch.zeros_like(hardest_pos))
    return per_anchor.sum() / valid.sum().clamp_min(1)


def texture_losses(outputs: dict[str, Tensor], batch: dict[str, Tensor], cfg: ModelConfig,
                   texture_tile: int) -> dict[str, Tensor]:
    """{"recon": L1 to batch["texture"], "decoder_triplet": summed over the up-block levels}, weighted."""
    if "texture" not in batch:
        raise KeyError("SAN models need batch['texture'] (pseudo texture [B, 3, 6T, 4T] in [-1, 1])")
    pred, target = outputs["texture"], batch["texture"]
    if target.shape != pred.shape:
        raise ValueError(f"batch['texture'] must be {tuple(pred.shape)} (atlas of the model's texture_tile "
                         f"T={texture_tile}), got {tuple(target.shape)}")
    labels = batch["label"]
    levels = [outputs[f"decoder_up{i}"] for i in range(1, len(DECODER_WIDTHS))]
    return {
        "recon": cfg.recon_weight * F.l1_loss(pred.float(), target.float()),
        "decoder_triplet": cfg.decoder_triplet_weight * sum(
            decoder_triplet(m, labels, cfg.decoder_triplet_margin, cfg.decoder_triplet_distance) for m in levels),
    }


def _decoder_outputs(decoder: SADecoder, feats: dict[str, Tensor]) -> dict[str, Tensor]:
    texture, ups = decoder(feats)
    return {"texture": texture, **{f"decoder_up{i}": u for i, u in enumerate(ups, 1)}}


# --- san ---

class SANEncoder(nn.Module):
    """SA-Enc -> GAP (-> Linear+BN+ReLU when fc_dim > 0) (-> BNNeck): the san model's inference model."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.trunk = build_trunk(cfg.backbone, cfg.pretrained, cfg.last_stride, depth=4)
        self.fc = None
        self.feature_dim = self.trunk.out_channels
        if cfg.san_fc_dim > 0:
            self.fc = nn.Sequential(nn.Linear(self.feature_dim, cfg.san_fc_dim), nn.BatchNorm1d(cfg.san_fc_dim),
                                    nn.ReLU(inplace=True))
            nn.init.normal_(self.fc[0].weight, 0.0, 0.01)  # torchreid's Linear init, as in the official repo
            nn.init.zeros_(self.fc[0].bias)
            self.feature_dim = cfg.san_fc_dim
        self.neck = BNNeck(self.feature_dim) if cfg.bnneck else None

    def pool(self, fmap: Tensor) -> Tensor:
        """The pooled feature from the layer4 map, before the neck (what the triplet loss reads)."""
        v = global_avg_pool(fmap)
        return v if self.fc is None else self.fc(v)

    def pooled(self, image: Tensor) -> Tensor:
        return self.pool(self.trunk(image))

    def forward(self, image: Tensor) -> Tensor:
        feature = self.pooled(image)
        return feature if self.neck is None else self.neck(feature)

    forward_features = forward  # the inference module answers the same calls as the model


class SAN(Baseline):
    """san: the baseline on the SA-Enc, plus the SA-Dec (training only); see the module doc."""

    inputs: tuple[str, ...] = MODEL_INPUTS["san"]

    def __init__(self, num_classes: int, cfg: ModelConfig, texture_tile: int):
        super().__init__(num_classes, cfg, encoder=SANEncoder(cfg))
        self.texture_tile = texture_tile  # T of batch["texture"]: the texture cache's
        self.decoder = SADecoder(self.encoder.trunk.level_channels, atlas_shape(texture_tile)[:2],
                                 cfg.decoder_width_mult)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        levels = self.encoder.trunk.levels(batch["image"])
        return {**self.id_outputs(self.encoder.pool(levels["layer4"])), **_decoder_outputs(self.decoder, levels)}

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**super().losses(outputs, batch), **texture_losses(outputs, batch, self.cfg, self.texture_tile)}


# --- dsa_san ---

class DSASAN(DSAReID):
    """dsa_san: the dsa model + SA-Dec on the MF-Stream's conv4 map; inference = MF-Stream (as dsa)."""

    def __init__(self, num_classes: int, cfg: ModelConfig, dsap_size: int, texture_tile: int):
        super().__init__(num_classes, cfg, with_dsag=True, dsap_size=dsap_size)
        self.inputs = MODEL_INPUTS["dsa_san"]
        self.texture_tile = texture_tile
        trunk = self.mf.trunk.level_channels  # layer1..layer3; F (= layer3) also feeds the layer4 input
        self.decoder = SADecoder({**trunk, "layer4": trunk["layer3"]}, atlas_shape(texture_tile)[:2],
                                 cfg.decoder_width_mult)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        levels = self.mf.trunk.levels(batch["image"])
        f_g, f_l = self.mf.head(levels["layer3"])
        return {**self.fused_outputs(f_g, f_l, batch),
                **_decoder_outputs(self.decoder, {**levels, "layer4": levels["layer3"]})}

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**super().losses(outputs, batch), **texture_losses(outputs, batch, self.cfg, self.texture_tile)}
