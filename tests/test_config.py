from dataclasses import dataclass, field
from typing import Literal

import pytest

from reid.config import ConfigError, from_mapping


@dataclass
class Inner:
    size: int = 32
    policy: Literal["mean", "last"] = "mean"


@dataclass
class Outer:
    lr: float
    name: str = "x"
    flip: bool = True
    ranks: tuple[int, ...] = (1, 5)
    path: str | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


def test_builds_nested_and_coerces():
    cfg = from_mapping(Outer, {"lr": 1, "ranks": [1, 10], "inner": {"size": 16}}, "train")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.ranks == (1, 10) and cfg.inner.size == 16 and cfg.inner.policy == "mean"


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({}, "missing parameter train.lr"),
        ({"lr": 1, "lrr": 2}, "train.lrr"),
        ({"lr": "fast"}, "train.lr: expected a number"),
        ({"lr": 1, "flip": "yes"}, "train.flip: expected true/false"),
        ({"lr": 1, "inner": {"policy": "first"}}, "train.inner.policy: 'first' is not one of"),
        ({"lr": 1, "inner": {"size": 1.5}}, "train.inner.size: expected an integer"),
        ({"lr": -1}, "train: lr must be > 0"),
    ],
)
def test_errors_name_the_parameter(mapping, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(Outer, mapping, "train")


def test_an_unquoted_off_read_as_false_means_off():
    """`dvc exp run -S` rewrites params.yaml with `amp: off` unquoted, which YAML 1.1 reads as false."""
    from reid.engine.trainer import TrainConfig

    assert from_mapping(TrainConfig, {"amp": False}, "train").amp == "off"
    with pytest.raises(ConfigError, match="train.amp: True is not one of"):
        from_mapping(TrainConfig, {"amp": True}, "train")
