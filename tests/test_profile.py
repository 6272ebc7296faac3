"""Profiles: every profile merges onto the default and every stage's section of it validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reid.config import ConfigError
from reid.data.manifest import PrepareConfig
from reid.densepose.build import DensePoseConfig
from reid.densepose.lite_train import TrainDensePoseConfig
from reid.dsap import DSAPConfig
from reid.engine.inference import FeaturesConfig
from reid.engine.trainer import TrainConfig
from reid.evaluation import EvaluateConfig
from reid.modeling import MODEL_NAMES
from reid.modeling.config import ModelConfig
from reid.report import ReportConfig
from reid.sanpg.config import SanPGConfig, TextureConfig
from reid.synth import PitConfig, TargetConfig, WorldConfig
from stages.common import load_config
from stages.profile import deep_merge, profile_params

ROOT = Path(__file__).resolve().parents[1]
DVC_IGNORED = {"size", "nfiles"}  # dvc.stage.cache: dict_sha256(..., exclude=[PARAM_SIZE, PARAM_NFILES])
PROFILES = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))
SECTIONS = {"synthesize.world": WorldConfig, "synthesize.pit": PitConfig, "synthesize.target": TargetConfig,
            "prepare": PrepareConfig, "target": PrepareConfig,
            "densepose": DensePoseConfig, "dsap": DSAPConfig, "train_densepose": TrainDensePoseConfig,
            "train_sanpg": SanPGConfig, "texture": TextureConfig, "train": TrainConfig, "features": FeaturesConfig,
            "evaluate": EvaluateConfig, "report": ReportConfig,
            **{f"models.{m}": ModelConfig for m in MODEL_NAMES}}


def test_the_three_profiles_exist():
    assert {"default", "micro", "paper"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_every_stage_section_of_every_profile_validates(name):
    params = profile_params(name, ROOT / "profiles")
    for dotted, cls in SECTIONS.items():
        load_config(cls, dotted, params)


@pytest.mark.parametrize("name", PROFILES)
def test_no_model_section_repeats_the_caches_sizes(name):
    """S is dsap.grid and T train_sanpg.tile alone: the train stage reads both from the caches' metadata."""
    params = profile_params(name, ROOT / "profiles")
    assert not keys_named(params["models"], {"dsap_size", "texture_tile"}, "models")


def keys_named(node: Any, names: set[str], where: str = "") -> list[str]:
    """Dotted paths of every mapping key in `names`, at any depth (lists included)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            found += [path] if key in names else []
            found += keys_named(value, names, path)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += keys_named(item, names, f"{where}[{i}]")
    return found


def test_keys_named_finds_nested_keys():
    tree = {"a": {"size": 1, "b": [{"nfiles": 2}]}, "size": 3}
    assert keys_named(tree, DVC_IGNORED) == ["a.size", "a.b[0].nfiles", "size"]


@pytest.mark.parametrize("name", [*PROFILES, "params.yaml"])
def test_no_parameter_is_named_size_or_nfiles(name):
    # DVC's run-cache drops keys named `size` / `nfiles` at any depth when it decides whether a
    # stage already ran (treeverse/dvc#10296): a change to one would restore the old output.
    params = yaml.safe_load((ROOT / name).read_text()) if name == "params.yaml" else profile_params(name, ROOT / "profiles")
    assert keys_named(params, DVC_IGNORED) == [], "rename these keys (e.g. height/width, grid)"


def test_committed_params_are_the_default_profile():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == profile_params("default", ROOT / "profiles"), "run: python -m stages.profile default"


def test_overlay_with_a_typo_is_rejected():
    with pytest.raises(ConfigError, match="unknown parameter train.epoch"):
        deep_merge({"train": {"epochs": 1}}, {"train": {"epoch": 2}})
