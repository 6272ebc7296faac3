"""What every stage shares: reading its params.yaml section into a typed config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reid.config import ConfigError, from_mapping

T = TypeVar("T")

PARAMS_FILE = Path(os.environ.get("REID_PARAMS", "params.yaml"))


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return params


def section(dotted: str, params: dict[str, Any] | None = None) -> Any:
    """The value at a dotted key (e.g. ``synthesize.world``), with an error naming the key."""
    node: Any = read_params() if params is None else params
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{PARAMS_FILE}: missing parameter {'.'.join(dotted.split('.')[:i + 1])}")
        node = node[part]
    return node


def load_config(cls: type[T], dotted: str, params: dict[str, Any] | None = None) -> T:
    """Dataclass `cls` built from the params section at `dotted`, validated."""
    return from_mapping(cls, section(dotted, params), dotted)
