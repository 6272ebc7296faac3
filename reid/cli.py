"""The ``reid`` command: use a trained model to embed images, search a gallery, export the network.

    reid embed  --model data/models/dsa  gallery_folder/  --out gallery.parquet
    reid search --model data/models/dsa  --gallery gallery.parquet  query.jpg  [--top-k 10] [--draw ranked.png]
                [--force]   # a gallery embedded by other weights is refused unless --force
    reid export --model data/models/dsa  --format onnx  --out dsa.onnx

``--model`` is a trained model folder (``model.pt`` + ``model.json``, see reid.export) or its
``model.pt`` file; the ``model.json`` beside the weights is the network's one description (never a
params file). ``--name`` optionally states the model name it must give. Feature files (``--out``,
``--gallery``) have the format of reid.features.

This is the program's entry point, so unlike the library it reads argv. Bad input ends with one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from reid.data.transforms import eval_transform
from reid.device import default_device
from reid.engine.inference import extract_features
from reid.export import (
    MissingExtraError,
    TrainedModel,
    export_onnx,
    export_torchscript,
    import_onnx,
    load_trained,
)
from reid.features import (
    WEIGHTS_PATH,
    WEIGHTS_SHA256,
    FeatureFile,
    feature_metadata,
    read_features,
    write_features,
)
from reid.io import file_sha256, read_image, write_image
from reid.modeling import MODEL_NAMES
from reid.retrieval import l2_normalize, search
from reid.viz import make_grid

QUERY_PREFIX = "query/"  # the ids of a manifest's query rows: <split>/<name> (reid.data.manifest.image_id)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class CliError(Exception):
    """Bad input found by the command itself (the message is printed as is)."""


# ---- the model ---------------------------------------------------------------------------------

def load_model(args: argparse.Namespace) -> TrainedModel:
    """The inference network of --model, as the model.json beside its weights describes it (--name: checked)."""
    return load_trained(args.model, name=args.name)


# ---- images and embeddings ---------------------------------------------------------------------

class ImageFiles(Dataset):
    """Image files -> {"image": eval-transformed tensor}; a bad file raises ImageReadError naming it."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int]):
        self.paths, self.transform = list(paths), eval_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.transform(read_image(self.paths[i]))}


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def collect_images(inputs: Sequence[str]) -> tuple[list[str], list[Path]]:
    """(image ids, paths): a folder gives its .jpg/.png files (recursively, sorted) with ids relative
    to it; a file gives itself with its file name as id."""
    ids, paths = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted((p for p in path.rglob("*") if p.is_file() and is_image_file(p)),
                           key=lambda p: p.relative_to(path).as_posix())
            if not found:
                raise CliError(f"no .jpg/.png images in folder {path}")
            ids += [p.relative_to(path).as_posix() for p in found]
            paths += found
        elif path.is_file():
            if not is_image_file(path):
                raise CliError(f"{path}: not a .jpg/.png image")
            ids.append(path.name)
            paths.append(path)
        else:
            raise CliError(f"no such image or folder: {path}")
    seen: dict[str, Path] = {}
    for image_id, path in zip(ids, paths, strict=True):
        if image_id in seen:
            raise CliError(f"two images have the id {image_id!r}: {seen[image_id]} and {path} "
                           f"(give their common folder instead)")
        seen[image_id] = path
    return ids, paths


def embed_paths(model: nn.Module, paths: Sequence[Path], ids: Sequence[str], size: tuple[int, int], *,
                device: torch.device, batch_size: int, flip: bool) -> np.ndarray:
    """float32 [N, D] raw embeddings of the image files, batched (tqdm progress)."""
    table = extract_features(model, ImageFiles(paths, size), list(ids), device=device, batch_size=batch_size,
                             flip=flip)
    column = table.column("feature").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), column.type.list_size)


# ---- subcommands -------------------------------------------------------------------------------

def cmd_embed(args: argparse.Namespace) -> None:
    ids, paths = collect_images(args.inputs)
    trained = load_model(args)
    info = trained.info
    features = embed_paths(trained.network, paths, ids, info.input_size, device=default_device(args.device),
                           batch_size=args.batch_size, flip=args.flip)
    if args.metric == "cosine":
        features = l2_normalize(features)
    write_features(args.out, ids, features, feature_metadata(model=info.name, weights=trained.weights, flip=args.flip,
                                                             size=info.input_size, metric=args.metric),
                   paths=[str(p.resolve()) for p in paths])
    print(f"embedded {len(ids)} images with {info.name} ({features.shape[1]}-d, {args.metric}) -> {args.out}")


def read_gallery(path: str) -> FeatureFile:
    """The gallery's feature file; an empty one is refused."""
    gallery = read_features(path)
    if not gallery.image_ids:
        raise CliError(f"{path}: the gallery is empty")
    return gallery


def searched_rows(gallery: FeatureFile, all_rows: bool) -> FeatureFile:
    """The rows a search looks through. A features-stage file (data/features/<m>.parquet) holds the query
    split too, as ids ``query/...``: a query would find itself at rank 1, so those rows are left out
    unless `all_rows` (a `reid embed` file has no split prefix: all its rows are searched)."""
    keep = [i for i, image_id in enumerate(gallery.image_ids) if all_rows or not image_id.startswith(QUERY_PREFIX)]
    if len(keep) == len(gallery.image_ids):
        return gallery
    if not keep:
        raise CliError(f"{gallery.path}: every row is a query row ({QUERY_PREFIX}...): nothing to search "
                       "(--all-rows searches them anyway)")
    print(f"reid search: {gallery.path}: searching its {len(keep)} gallery rows, not its "
          f"{len(gallery.image_ids) - len(keep)} query rows (--all-rows to include them)", file=sys.stderr)
    return dataclasses.replace(gallery, image_ids=[gallery.image_ids[i] for i in keep], features=gallery.features[keep],
                               paths=None if gallery.paths is None else [gallery.paths[i] for i in keep])


def check_gallery_weights(gallery: FeatureFile, trained: TrainedModel) -> None:
    """Refuse a gallery embedded by other weights than `trained`'s: its features would not be comparable."""
    recorded, weights = gallery.metadata.get(WEIGHTS_SHA256), trained.weights
    if recorded is None:  # written before feature files recorded their weights: check the model name only
        if gallery.network is not None and gallery.network != trained.info.name:
            raise CliError(f"{gallery.path} was embedded by a {gallery.network!r} model, not by {weights} "
                           f"({trained.info.name!r}): re-embed the gallery with this model, or pass --force")
        print(f"reid search: warning: {gallery.path} records no weights hash; cannot check that {weights} "
              f"embedded it", file=sys.stderr)
        return
    digest = file_sha256(weights)
    if recorded != digest:
        by = gallery.metadata.get(WEIGHTS_PATH, "other weights")
        raise CliError(f"{gallery.path} was embedded by {by} (sha256 {recorded[:12]}), not by {weights} "
                       f"(sha256 {digest[:12]}): re-embed the gallery with this model, or pass --force")


def cmd_search(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise CliError(f"--top-k must be >= 1, got {args.top_k}")
    if args.draw and Path(args.draw).suffix.lower() not in IMAGE_SUFFIXES:
        raise CliError(f"--draw {args.draw}: the picture must be a .png or .jpg file")
    gallery = searched_rows(read_gallery(args.gallery), args.all_rows)
    ids, paths = collect_images(args.queries)
    if args.draw and gallery.paths is None:
        raise CliError(f"--draw needs the gallery's image paths: {args.gallery} has no 'path' column")
    # Embed queries the way the gallery was embedded (flip, metric); files from the features stage
    # (raw features, no metric recorded) are compared by cosine, as the evaluate stage does by default.
    flip = gallery.flip is not False
    metric = gallery.metadata.get("metric", "cosine")
    if metric not in ("cosine", "l2"):
        raise CliError(f"{args.gallery}: unknown metric {metric!r} in its metadata (expected cosine or l2)")
    trained = load_model(args)
    if not args.force:
        check_gallery_weights(gallery, trained)
    h, w = size = trained.info.input_size
    if gallery.metadata.get("size", f"{h}x{w}") != f"{h}x{w}":
        raise CliError(f"{args.gallery} was embedded at {gallery.metadata['size']}, this model's input is {h}x{w}")
    queries = embed_paths(trained.network, paths, ids, size, device=default_device(args.device),
                          batch_size=args.batch_size, flip=flip)
    features = gallery.features
    if metric == "cosine":
        queries, features = l2_normalize(queries), l2_normalize(features)
    dists, idxs = search(queries, features, args.top_k, metric)
    for q, image_id in enumerate(ids):
        print(f"query {image_id}")
        print("rank\timage_id\tdistance")
        for rank, (g, d) in enumerate(zip(idxs[q], dists[q], strict=True), 1):
            print(f"{rank}\t{gallery.image_ids[g]}\t{d:.6f}")
    if args.draw:
        draw_ranked(args.draw, gallery.paths, paths, idxs, dists, size)
        print(f"ranked lists -> {args.draw}")


def draw_ranked(out: str, gallery_paths: Sequence[str], query_paths: Sequence[Path], idxs: np.ndarray,
                dists: np.ndarray, size: tuple[int, int]) -> None:
    """One row per query: the query, then its top-k gallery images captioned with rank and distance."""
    cells, captions = [], []
    for q, path in enumerate(query_paths):
        cells.append(read_image(path))
        captions.append("query")
        for rank, (g, d) in enumerate(zip(idxs[q], dists[q], strict=True), 1):
            cells.append(read_image(gallery_paths[g]))
            captions.append(f"{rank}:{d:.2f}")
    write_image(out, make_grid(cells, idxs.shape[1] + 1, captions=captions, cell_size=size))


def cmd_export(args: argparse.Namespace) -> None:
    if args.format == "onnx":
        import_onnx()  # a missing [export] extra is reported before the model is loaded
    trained = load_model(args)
    export = export_onnx if args.format == "onnx" else export_torchscript
    export(trained.network, args.out, trained.info)
    print(f"exported {trained.info.name} inference network ({trained.network.feature_dim}-d) as {args.format} "
          f"-> {args.out}")


# ---- argument parsing --------------------------------------------------------------------------

def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained model folder (model.pt + model.json) or model.pt")
    parser.add_argument("--name", choices=MODEL_NAMES, help="the model name model.json must give (a check)")


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid", description="Use a trained reID model: embed, search, export.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed images or folders into a Parquet feature file")
    _model_args(p)
    _run_args(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help=".jpg/.png files or folders of them")
    p.add_argument("--out", required=True, help="output Parquet file (image_id, path, feature)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the mirrored image's embedding (default: on)")
    p.add_argument("--metric", choices=("cosine", "l2"), default="cosine",
                   help="cosine stores L2-normalised features (default); l2 stores raw ones")
    p.set_defaults(run=cmd_embed)

    p = sub.add_parser("search", help="rank an embedded gallery for query images")
    _model_args(p)
    _run_args(p)
    p.add_argument("--gallery", required=True, help="Parquet feature file written by `reid embed`")
    p.add_argument("queries", nargs="+", metavar="QUERY_IMAGE")
    p.add_argument("--top-k", type=int, default=10,
                   help="list length (default 10); distance = 1 - cosine, or squared L2 for an l2 gallery")
    p.add_argument("--draw", help="also write a picture: each query and its top-k (PNG/JPEG)")
    p.add_argument("--all-rows", action="store_true",
                   help="also search a features-stage file's query rows (left out by default)")
    p.add_argument("--force", action="store_true",
                   help="search even a gallery embedded by other weights than --model's (its distances mean little)")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("export", help="export the inference network to ONNX or TorchScript")
    _model_args(p)
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    p.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    p.set_defaults(run=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print(f"reid {args.command}: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        args.run(args)
    # ValueError covers ConfigError, ImageReadError, ArrowInvalid; MissingExtraError a missing optional package
    except (CliError, ValueError, OSError, MissingExtraError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"reid {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
