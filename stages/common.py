"""What every stage shares: its path arguments, reading its params.yaml section into a typed config, and
`run`, its entry point."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from reid.config import ConfigError, InputError, from_mapping

T = TypeVar("T")

PARAMS_FILE = Path(os.environ.get("REID_PARAMS", "params.yaml"))

# The files of one evaluate output folder (dvc.yaml: ${paths.eval}/<set>/, each file an output of its own:
# the ranked list is a stage-level plot), which the report reads too.
RANKED_LIST = "ranked_list.png"
PER_QUERY = "per_query.parquet"


def add_paths(parser: argparse.ArgumentParser, **paths: str) -> argparse.ArgumentParser:
    """A required ``--<name>`` Path argument per keyword (``lite_model`` -> ``--lite-model``), its
    value the help text. dvc.yaml's cmd passes every path a stage reads or writes this way."""
    for name, help_text in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=help_text)
    return parser


def stage_parser(doc: str, **paths: str) -> argparse.ArgumentParser:
    """The parser of a stage: its docstring's first line as description, and `paths` (see add_paths)."""
    return add_paths(argparse.ArgumentParser(description=doc.splitlines()[0]), **paths)


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
    """Dataclass `cls` built from the params section at `dotted`, validated; errors name the file and key."""
    node = section(dotted, params)
    try:
        return from_mapping(cls, node, dotted)
    except ConfigError as err:
        raise ConfigError(f"{PARAMS_FILE}: {err}") from None


def run(main: Callable[[], int | None]) -> NoReturn:
    """A stage's ``if __name__ == "__main__":`` entry: exit with `main`'s status.

    Bad input (reid.config.InputError: a parameter — from_mapping turns a config's validate() ValueError
    into a ConfigError —, a manifest row, an image file) is one line on stderr and exit status 2, as the
    `reid` CLI does; any other error is unexpected and keeps its traceback.
    """
    try:
        status = main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
