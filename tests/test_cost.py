"""reid.modeling.cost: parameters and FLOPs of the training and inference graphs."""

from __future__ import annotations

import pytest
import torch
from modelutil import build
from torch import nn

from reid.modeling.config import ModelConfig
from reid.modeling.cost import forward_flops, model_cost, parameter_count

CFG = ModelConfig(backbone="resnet18", pretrained=None, width_mult=0.125, id_head_hidden=32, decoder_width_mult=0.25)
SIZE = (64, 32)


@pytest.fixture(scope="module")
def costs() -> dict[str, dict]:
    torch.manual_seed(0)
    return {name: model_cost(build(name, 10, CFG, dsap_size=16, texture_tile=8), SIZE, dsap_size=16, texture_tile=8)
            for name in ("baseline", "baseline2b", "dsa", "san", "dsa_san")}


def test_flops_of_a_linear_layer_are_two_per_multiply_add():
    assert forward_flops(nn.Linear(4, 3, bias=False), torch.zeros(5, 4)) == 2 * 5 * 4 * 3
    assert parameter_count(nn.Linear(4, 3)) == 15


def test_regulators_cost_at_training_only(costs):
    """DSA's DSAG-Stream and SAN's decoder are dropped at inference: dsa infers at baseline2b's cost,
    san at baseline's, dsa_san at baseline2b's, while each trains with more."""
    assert costs["dsa"]["inference"] == costs["baseline2b"]["inference"]
    assert costs["san"]["inference"] == costs["baseline"]["inference"]
    assert costs["dsa_san"]["inference"] == costs["baseline2b"]["inference"]
    for name, reference in (("dsa", "baseline2b"), ("san", "baseline"), ("dsa_san", "dsa")):
        assert costs[name]["training"]["flops"] > costs[reference]["training"]["flops"], name
        assert costs[name]["training"]["params"] > costs[reference]["training"]["params"], name
    for cost in costs.values():
        assert 0 < cost["inference"]["flops"] <= cost["training"]["flops"]
        assert 0 < cost["inference"]["params"] < cost["training"]["params"]  # the ID heads at least


def test_flops_grow_with_the_input_size():
    torch.manual_seed(0)
    model = build("baseline", 10, CFG)
    small, large = model_cost(model, (64, 32)), model_cost(model, (128, 64))
    assert large["inference"]["flops"] > 3 * small["inference"]["flops"]
    assert large["inference"]["params"] == small["inference"]["params"]


def test_a_model_trained_on_caches_needs_their_shapes():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="dsap_size"):
        model_cost(build("dsa", 10, CFG, dsap_size=16), SIZE)


def test_counting_leaves_the_model_and_the_random_stream_alone():
    """The train stage counts the trained model: its weights, BatchNorm statistics, mode and torch's
    RNG must come out as they went in."""
    torch.manual_seed(0)
    model = build("dsa", 10, CFG, dsap_size=16).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    model_cost(model, SIZE, dsap_size=16)
    assert torch.equal(torch.rand(3), expected)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
