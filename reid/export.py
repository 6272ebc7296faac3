"""Trained-model bundles for users, and export of the inference network to ONNX / TorchScript.

A trained model folder (``data/models/<name>/``) holds ``model.pt``, the tensors-only state dict of
the TRAINING model, and ``model.json``, the one description of the network, which is all that
rebuilds it (never the repo's params.yaml): the model name, its ModelConfig, the input size (H, W)
it was trained at and, for the models that train on a cache, the cache's S (``dsap_size``: dsa,
dsa_san) and T (``texture_tile``: san, dsa_san). ``load_trained`` opens a folder (or its model.pt).
Files of format ``reid-model/1`` (S and T inside ``model``, from before they came from the caches)
are still read.

For use, the inference network is rebuilt (``model.inference_model()``: for dsa the MF-Stream,
the DSAG-Stream is dropped). Its weights are the state dict's entries of the tensors it shares with
the training model, so the number of training identities (the classifier shapes) is not needed; the
whole state dict's keys are still checked against the named model so that weights of another model
(e.g. baseline2b read as dsa) are refused rather than half-loaded. `load_trained_model` rebuilds the
whole training model instead (for dsa's fused / DSAG-Stream diagnostics), its classifiers sized
from the state dict.

Exported files take ``image``: float32 [B, 3, H, W] RGB scaled to [0, 1] and ImageNet-normalised
(``reid.data.transforms.eval_transform``), batch size free, and give ``feature``: [B, D], the raw
(not L2-normalised) embedding. Both carry ``model.json``-like metadata (ONNX metadata_props,
TorchScript extra file ``reid.json``).

Both exporters used here are deprecated upstream (torch.jit, the TorchScript-based ONNX exporter)
but are what needs no extra packages today; their deprecation notices are silenced so that the
``reid export`` output stays readable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from reid.config import from_mapping
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid.io import atomic_path, write_json_atomic
from reid.modeling import MODEL_INPUTS, MODEL_NAMES
from reid.modeling.build import build_model
from reid.modeling.config import CACHE_SHAPES, ModelConfig, check_cache_shapes
from reid.modeling.heads import IdClassifier

WEIGHTS_FILE = "model.pt"
INFO_FILE = "model.json"
INFO_FORMAT = "reid-model/2"
LEGACY_INFO_FORMAT = "reid-model/1"  # S and T were ModelConfig fields (model.dsap_size, model.texture_tile)
ONNX_OPSET = 17


@dataclass
class ModelInfo:
    """What rebuilds a trained network: name, ModelConfig, input size (H, W), the caches' S and T."""

    name: str
    model: ModelConfig
    input_size: tuple[int, int]
    dsap_size: int | None = None  # S of the DSAP cache it trained on (dsa, dsa_san)
    texture_tile: int | None = None  # T of the texture cache it trained on (san, dsa_san)
    # Parameters and FLOPs per image of the training and inference graphs (reid.modeling.cost);
    # recorded by the train stage, not needed to rebuild the network.
    cost: dict[str, dict[str, int]] | None = None

    def shapes(self) -> dict[str, int]:
        """build_model's cache-shape keyword arguments: those this model takes."""
        return {key: getattr(self, key) for key in CACHE_SHAPES if getattr(self, key) is not None}

    def as_json(self) -> dict:
        cost = {"cost": self.cost} if self.cost is not None else {}
        return {"format": INFO_FORMAT, "name": self.name, "model": dataclasses.asdict(self.model),
                "input_size": list(self.input_size), **self.shapes(), **cost}


def model_info(name: str, model: ModelConfig, input_size: tuple[int, int], *, dsap_size: int | None = None,
               texture_tile: int | None = None, cost: dict[str, dict[str, int]] | None = None) -> ModelInfo:
    """A checked ModelInfo (known model name, positive input size, valid ModelConfig, S / T exactly
    for the models that read those caches)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input size must be two integers (height, width), got {input_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"input size must be positive, got {h}x{w}")
    model.validate()
    check_cache_shapes(name, dsap_size, texture_tile)
    return ModelInfo(name, model, (h, w), dsap_size, texture_tile, cost)


def write_model_info(folder: str | os.PathLike, info: ModelInfo) -> Path:
    """Write ``<folder>/model.json`` (atomically); the train stage calls this beside model.pt."""
    path = Path(folder) / INFO_FILE
    write_json_atomic(path, info.as_json())
    return path


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo from a ``model.json``; errors name the file and the bad field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable model.json ({err})") from None
    if not isinstance(data, dict) or data.get("format") not in (INFO_FORMAT, LEGACY_INFO_FORMAT):
        raise ValueError(f"{path}: not a reid model.json (expected \"format\": \"{INFO_FORMAT}\")")
    missing = [key for key in ("name", "model", "input_size") if key not in data]
    if missing:
        raise ValueError(f"{path}: missing field {missing[0]!r}")
    if data["format"] == LEGACY_INFO_FORMAT:
        data = _upgraded_v1(data)
    cfg = from_mapping(ModelConfig, data["model"], f"{path}: model")  # its errors name the file
    try:
        return model_info(data["name"], cfg, data["input_size"], **{k: data.get(k) for k in CACHE_SHAPES},
                          cost=data.get("cost"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _upgraded_v1(data: dict) -> dict:
    """A reid-model/1 description as /2: S and T out of ``model``, kept for the models that read them."""
    model = data["model"]
    if not isinstance(model, dict) or data["name"] not in MODEL_INPUTS:
        return data  # from_mapping / model_info report it
    inputs = MODEL_INPUTS[data["name"]]
    shapes = {key: model[key] for key, cache in CACHE_SHAPES.items() if cache in inputs and key in model}
    return {**data, "model": {k: v for k, v in model.items() if k not in CACHE_SHAPES}, **shapes}


def weights_file(model: str | os.PathLike) -> Path:
    """The weights file a ``--model`` argument names: the file itself, or ``<folder>/model.pt``."""
    path = Path(model)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"no model weights at {weights}")
    return weights


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A tensors-only state dict (``torch.load(weights_only=True)``), with a clear error otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a tensors-only PyTorch state dict ({first[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (as written by the train stage)")
    return state


def _inference_state(model: nn.Module, inference: nn.Module, state: dict[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
    """`state` (keyed like `model`) re-keyed for `inference`, which shares tensors with `model`."""
    full_name = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    out = {}
    for key, tensor in inference.state_dict(keep_vars=True).items():
        if id(tensor) not in full_name:
            raise ValueError(f"inference_model() tensor {key} is not shared with the model")
        out[key] = state[full_name[id(tensor)]]
    return out


def _model_for_loading(info: ModelInfo, num_classes: int) -> nn.Module:
    # ImageNet weights would be overwritten at once: never look for them (nor warn they are missing).
    return build_model(info.name, num_classes, dataclasses.replace(info.model, pretrained=None), **info.shapes())


def _check_state_keys(model: nn.Module, state: dict[str, torch.Tensor], weights: str | os.PathLike,
                      name: str) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{weights} does not hold a {name!r} model with this config: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]} (wrong model name?)")


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], weights: str | os.PathLike, name: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches: another backbone or width
        raise ValueError(f"{weights} does not match model {name!r} with this config: "
                         f"{str(err).splitlines()[-1].strip()[:300]}") from None


def state_num_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Training identities in `state`: the output size of its ID classifiers (keyed like `model`'s)."""
    sizes = set()
    for name, module in model.named_modules():
        if isinstance(module, IdClassifier):
            last = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)][-1]
            key = f"{name}.{last}.weight"
            if key not in state:
                raise ValueError(f"state dict lacks the ID classifier weight {key}")
            sizes.add(int(state[key].shape[0]))
    if len(sizes) != 1:
        raise ValueError(f"expected one number of training identities over the ID classifiers, got {sorted(sizes)}")
    return sizes.pop()


def load_inference_model(weights: str | os.PathLike, info: ModelInfo) -> nn.Module:
    """The trained inference network (eval mode, CPU) from a training state dict."""
    state = load_state(weights)
    model = _model_for_loading(info, 2)  # the classifiers are not loaded: any class count does
    _check_state_keys(model, state, weights, info.name)
    inference = model.inference_model()
    _load_checked(inference, _inference_state(model, inference, state), weights, info.name)
    return inference.eval()


def load_trained_model(weights: str | os.PathLike, info: ModelInfo) -> nn.Module:
    """The whole trained model (eval mode, CPU), ID classifiers sized from the state dict.

    For what needs more than the inference network, e.g. dsa's DSAG-Stream at test time.
    """
    state = load_state(weights)
    probe = _model_for_loading(info, 2)
    _check_state_keys(probe, state, weights, info.name)
    model = _model_for_loading(info, state_num_classes(probe, state))
    _load_checked(model, state, weights, info.name)
    return model.eval()


@dataclass
class TrainedModel:
    """A trained model folder, loaded: the network (eval mode, CPU), its model.json, its weights file."""

    network: nn.Module
    info: ModelInfo
    weights: Path


def load_trained(model: str | os.PathLike, *, whole: bool = False, name: str | None = None) -> TrainedModel:
    """The network of a trained model folder (or its model.pt), rebuilt from the model.json beside it.

    `whole`: the whole training model (load_trained_model: dsa's fused / DSAG-Stream features),
    else the inference network. `name`: the model name model.json must give. Errors name the file.
    """
    weights = weights_file(model)
    info_path = weights.parent / INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"no {info_path} beside {weights}: a trained model folder holds {WEIGHTS_FILE} "
                                f"and the {INFO_FILE} the train stage writes beside it")
    info = read_model_info(info_path)
    if name is not None and info.name != name:
        raise ValueError(f"{info_path} describes model {info.name!r}, not {name!r}")
    load = load_trained_model if whole else load_inference_model
    return TrainedModel(load(weights, info), info, weights)


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def export_metadata(info: ModelInfo, feature_dim: int) -> dict[str, str]:
    """What a user of an exported file needs to feed it: input layout, size, normalisation."""
    h, w = info.input_size
    return {"reid_model": info.name, "input": f"image float32 [B, 3, {h}, {w}] RGB in [0, 1], ImageNet-normalised",
            "input_size": f"{h}x{w}", "mean": json.dumps(IMAGENET_MEAN), "std": json.dumps(IMAGENET_STD),
            "feature_dim": str(feature_dim), "output": "feature float32 [B, D], not L2-normalised",
            "model_config": json.dumps(dataclasses.asdict(info.model))}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def import_onnx() -> ModuleType:
    """The ``onnx`` package, or MissingExtraError naming the ``[export]`` extra."""
    try:
        import onnx
    except ImportError as err:
        raise MissingExtraError(f"ONNX export needs the onnx package ({err}): install the [export] extra, "
                                f"pip install -e '.[export]'") from None
    return onnx


def export_onnx(model: nn.Module, path: str | os.PathLike, info: ModelInfo, *, opset: int = ONNX_OPSET) -> Path:
    """ONNX file of `model` (an inference network) with a dynamic batch axis.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx`` package,
    while the torch.export-based one also needs ``onnxscript``. In eval mode it folds BatchNorm
    into the convolutions, so compare weights with `onnx_weight_count`, not all initializers.
    """
    onnx = import_onnx()
    path = Path(path)
    model = model.eval().cpu()
    example = torch.zeros(2, 3, *info.input_size)
    with atomic_path(path) as tmp, _quiet_deprecations():
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["feature"],
                          dynamic_axes={"image": {0: "batch"}, "feature": {0: "batch"}})
        proto = onnx.load(str(tmp))
        for key, value in export_metadata(info, int(model.feature_dim)).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return path


def export_torchscript(model: nn.Module, path: str | os.PathLike, info: ModelInfo) -> Path:
    """TorchScript file of `model` (traced; batch size free), metadata in the extra file ``reid.json``."""
    path = Path(path)
    model = model.eval().cpu()
    example = torch.zeros(2, 3, *info.input_size)
    with torch.no_grad(), _quiet_deprecations():
        traced = torch.jit.trace(model, example, check_trace=False)
    extra = {"reid.json": json.dumps(export_metadata(info, int(model.feature_dim)))}
    with atomic_path(path) as tmp, _quiet_deprecations():
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return path


def weight_count(model: nn.Module) -> int:
    """Number of convolution and linear weights (BatchNorm folding leaves these unchanged)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))


def onnx_weight_count(path: str | os.PathLike) -> int:
    """Number of weights feeding the Conv / Gemm / MatMul nodes of an ONNX file (cf. `weight_count`)."""
    graph = import_onnx().load(str(path)).graph
    sizes = {t.name: math.prod(t.dims) for t in graph.initializer}
    return sum(sizes.get(n.input[1], 0) for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul"))
