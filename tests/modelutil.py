"""Helpers for the model tests."""

from __future__ import annotations

import torch
from torch import nn


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
