"""Building blocks shared by the reID models: ResNet residual blocks run as G parallel
branches (grouped convolutions), the two-branch (global + 8 local) head, branch merging,
and the two-FC ID classifier.

Branches as groups: G independent branches of a ResNet block equal one block whose convs
have ``groups=G`` (channels laid out branch-major: branch g owns channels [g*C, (g+1)*C)).
When all branches read the same input (``shared_input``), the first conv and the shortcut
see all input channels (``groups=1``) and output G*C channels, which equals G separate convs.
BatchNorm is per channel, hence per branch. tests/test_modeling.py checks these blocks
against a loop over torchvision's BasicBlock/Bottleneck.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def branch_conv(in_total: int, out_total: int, kernel: int, stride: int, groups: int, branches: int) -> nn.Conv2d:
    """Conv with torchvision's ResNet init (Kaiming normal, fan-out) computed per branch."""
    conv = nn.Conv2d(in_total, out_total, kernel, stride, kernel // 2, groups=groups, bias=False)
    fan_out = out_total // branches * kernel * kernel
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
    return conv


def shortcut(in_total: int, out_total: int, stride: int, g_in: int, groups: int,
             shared_input: bool) -> nn.Sequential | None:
    """The residual projection (1x1 conv + BN) a block needs when its input and output differ, else None.
    A shared input feeding several branches always needs one: each branch gets its own copy."""
    if stride == 1 and in_total == out_total and not (shared_input and groups > 1):
        return None
    return nn.Sequential(branch_conv(in_total, out_total, 1, stride, g_in, groups), nn.BatchNorm2d(out_total))


class GroupedBasicBlock(nn.Module):
    """`groups` parallel ResNet BasicBlocks (in_ch -> out_ch channels per branch)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 1, stride: int = 1, shared_input: bool = False):
        super().__init__()
        g_in = 1 if shared_input else groups
        in_total = in_ch if shared_input else groups * in_ch
        out_total = groups * out_ch
        self.conv1 = branch_conv(in_total, out_total, 3, stride, g_in, groups)
        self.bn1 = nn.BatchNorm2d(out_total)
        self.conv2 = branch_conv(out_total, out_total, 3, 1, groups, groups)
        self.bn2 = nn.BatchNorm2d(out_total)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_total, out_total, stride, g_in, groups, shared_input)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class GroupedBottleneck(nn.Module):
    """`groups` parallel ResNet Bottlenecks (torchvision V1.5: stride on the 3x3 conv)."""

    def __init__(self, in_ch: int, width: int, out_ch: int, groups: int = 1, stride: int = 1,
                 shared_input: bool = False):
        super().__init__()
        g_in = 1 if shared_input else groups
        in_total = in_ch if shared_input else groups * in_ch
        mid, out_total = groups * width, groups * out_ch
        self.conv1 = branch_conv(in_total, mid, 1, 1, g_in, groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = branch_conv(mid, mid, 3, stride, groups, groups)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = branch_conv(mid, out_total, 1, 1, groups, groups)
        self.bn3 = nn.BatchNorm2d(out_total)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_total, out_total, stride, g_in, groups, shared_input)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def basic_stage(in_ch: int, out_ch: int, n_blocks: int, groups: int = 1, stride: int = 1,
                shared_input: bool = False) -> nn.Sequential:
    """A ResNet-18-style stage (`n_blocks` BasicBlocks, the first one strided) per branch."""
    blocks = [GroupedBasicBlock(in_ch, out_ch, groups, stride, shared_input)]
    blocks += [GroupedBasicBlock(out_ch, out_ch, groups) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


def conv5_stage(backbone: str, in_ch: int, channel_div: int = 1, groups: int = 1, stride: int = 1,
                shared_input: bool = False) -> nn.Sequential:
    """The backbone's conv5_x design (resnet18: 2 BasicBlocks of 512; resnet50: 3 Bottlenecks
    512-512-2048; efficientnet_lite0: 2 BasicBlocks of its 1280 output channels), every width divided by
    `channel_div`, as `groups` parallel branches. Random init."""
    if backbone in ("resnet18", "efficientnet_lite0"):
        return basic_stage(in_ch, conv5_width(backbone) // channel_div, 2, groups, stride, shared_input)
    if backbone == "resnet50":
        width, out = 512 // channel_div, 2048 // channel_div
        blocks = [GroupedBottleneck(in_ch, width, out, groups, stride, shared_input)]
        blocks += [GroupedBottleneck(out, width, out, groups) for _ in range(2)]
        return nn.Sequential(*blocks)
    raise ValueError(f"unknown backbone {backbone!r}")


def conv5_width(backbone: str) -> int:
    """Output channels of the backbone's conv5_x (= f_G's size)."""
    return {"resnet18": 512, "resnet50": 2048, "efficientnet_lite0": 1280}[backbone]


def global_avg_pool(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3))


class TwoBranchHead(nn.Module):
    """MF-Stream head (DSA §3.2.2, §4.2): global branch = conv5_x design -> GAP -> f_G;
    `n_local` local branches, each conv5_x with 1/`n_local` of the channels -> GAP -> f_L,i.
    All local branches read the whole map F; they run as one grouped stage. `global_branch`, when given,
    replaces the random-init conv5_x (an ImageNet trunk's own remaining blocks, weights included)."""

    def __init__(self, backbone: str, in_ch: int, n_local: int = 8, last_stride: int = 1,
                 global_branch: nn.Module | None = None):
        super().__init__()
        self.n_local = n_local
        self.global_branch = conv5_stage(backbone, in_ch, stride=last_stride) if global_branch is None else global_branch
        self.local_branches = conv5_stage(backbone, in_ch, n_local, n_local, last_stride, shared_input=True)
        self.global_dim = conv5_width(backbone)
        self.local_dim = conv5_width(backbone) // n_local

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        """(f_G [B, global_dim], f_L [B, n_local * local_dim], part-major)."""
        return global_avg_pool(self.global_branch(fmap)), global_avg_pool(self.local_branches(fmap))


def merge_matrix(groups: tuple[tuple[int, ...], ...], n_in: int) -> Tensor:
    """[len(groups), n_in] 0/1 matrix summing input branches into groups; groups must partition range(n_in)."""
    members = sorted(i for g in groups for i in g)
    if members != list(range(n_in)):
        raise ValueError(f"merge groups {groups} do not partition {n_in} branches")
    m = torch.zeros(len(groups), n_in)
    for row, group in enumerate(groups):
        m[row, list(group)] = 1.0
    return m


def merge_branches(x: Tensor, matrix: Tensor) -> Tensor:
    """Element-wise sum of branch feature maps: x [B, N*C, H, W] (branch-major) -> [B, M*C, H, W]."""
    b, nc, h, w = x.shape
    n_out, n_in = matrix.shape
    x = x.view(b, n_in, nc // n_in, h, w)
    out = torch.einsum("mn,bnchw->bmchw", matrix.to(x.dtype), x)
    return out.reshape(b, n_out * (nc // n_in), h, w)


class BNNeck(nn.Module):
    """BoT's BNNeck (Luo et al. 2019): BatchNorm1d over the pooled feature with its shift frozen at 0. The
    triplet loss reads the feature before it, the ID loss and retrieval the normalised copy after it."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)

    def forward(self, feature: Tensor) -> Tensor:
        return self.bn(feature)


def linear_classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """BoT's ID classifier behind a BNNeck: one linear layer without bias, N(0, 0.001) init."""
    fc = nn.Linear(in_dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class IdClassifier(nn.Module):
    """ID classifier of DSA §3.2.4: two FC layers (with BN + ReLU between) -> logits (softmax in the loss)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_classes))
        nn.init.kaiming_normal_(self.net[0].weight, mode="fan_out")
        nn.init.zeros_(self.net[0].bias)
        nn.init.normal_(self.net[3].weight, std=0.001)
        nn.init.zeros_(self.net[3].bias)

    def forward(self, feature: Tensor) -> Tensor:
        return self.net(feature)
