"""Helpers for the model tests."""

from __future__ import annotations

import torch
from torch import nn

from reid.modeling import MODEL_INPUTS
from reid.modeling.build import build_model
from reid.modeling.config import CACHE_SHAPES, ModelConfig


def build(name: str, num_classes: int, cfg: ModelConfig, *, dsap_size: int = 16, texture_tile: int = 8) -> nn.Module:
    """build_model with S / T given to exactly the models that read those caches, as the train stage does."""
    shapes = {"dsap_size": dsap_size, "texture_tile": texture_tile}
    return build_model(name, num_classes, cfg,
                       **{key: shapes[key] for key, cache in CACHE_SHAPES.items() if cache in MODEL_INPUTS[name]})


def loss_history(model: nn.Module, batch: dict[str, torch.Tensor], lr: float, steps: int = 6) -> list[dict[str, float]]:
    """Each step's loss terms while Adam fits `model` to one fixed batch (does training move the losses?)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        terms = model.losses(model(batch), batch)
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    return history
