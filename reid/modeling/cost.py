"""What a reID model costs: parameters and FLOPs of its training graph and of its inference graph.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2, as
there; convolutions, matmuls and their kin only — element-wise ops are not counted), for one
forward pass per image at the given input size. The training graph is ``model(batch)`` — every
stream, head and decoder a training step runs forward (losses and the backward pass excluded; the
backward costs about twice the forward); the inference graph is ``model.inference_model()`` — what
`forward_features` runs for retrieval. The papers' point shows here: dsa infers at exactly
baseline2b's cost and san at baseline's, although they train with more.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reid.parts import N_PARTS, atlas_shape


def parameter_count(module: nn.Module) -> int:
    """Number of parameters (shared tensors once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def forward_flops(fn: Any, *args: Any) -> int:
    """FLOPs of one call `fn(*args)`, without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def dummy_batch(model: nn.Module, input_size: tuple[int, int], n: int, *, dsap_size: int | None = None,
                texture_tile: int | None = None) -> dict[str, torch.Tensor]:
    """A batch of `n` zero images with what `model.inputs` asks for (DSAP-images, a texture atlas),
    labels 0 .. n - 1."""
    h, w = input_size
    batch = {"image": torch.zeros(n, 3, h, w), "label": torch.arange(n)}
    if "dsap" in model.inputs:
        if dsap_size is None:
            raise ValueError("this model trains on DSAP-images: give dsap_size")
        batch["dsap"] = torch.zeros(n, N_PARTS, 3, dsap_size, dsap_size)
    if "texture" in model.inputs:
        if texture_tile is None:
            raise ValueError("this model trains on pseudo textures: give texture_tile")
        th, tw, _ = atlas_shape(texture_tile)
        batch["texture"] = torch.zeros(n, 3, th, tw)
    return batch


def model_cost(model: nn.Module, input_size: tuple[int, int], *, dsap_size: int | None = None,
               texture_tile: int | None = None) -> dict[str, dict[str, int]]:
    """``{"training": {"params", "flops"}, "inference": {"params", "flops"}}`` per image at `input_size`.

    Counted on a CPU copy in eval mode (BatchNorm's batch statistics do not change FLOPs), so `model`
    itself — device, mode, weights, BatchNorm statistics — is untouched, wherever it is; torch's CPU
    RNG is restored after, so a caller's random stream does not depend on whether it counted.
    """
    with torch.random.fork_rng(devices=[]):
        model = copy.deepcopy(model).cpu().eval()
        batch = dummy_batch(model, input_size, 2, dsap_size=dsap_size, texture_tile=texture_tile)
        inference = model.inference_model()
        return {
            "training": {"params": parameter_count(model), "flops": forward_flops(model, batch) // 2},
            "inference": {"params": parameter_count(inference), "flops": forward_flops(inference, batch["image"]) // 2},
        }
