"""The `reid` command, run in-process: embed, search (planted duplicate at rank 1), export, bad input."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from reid.cli import main
from reid.data.transforms import eval_transform
from reid.engine.inference import embed
from reid.export import model_info, write_model_info
from reid.features import feature_metadata
from reid.io import file_sha256, parquet_metadata, read_image, write_parquet_atomic
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig

SIZE = (64, 32)
CFG = ModelConfig(backbone="resnet18", pretrained=None, id_head_hidden=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def person_like(seed: int) -> np.ndarray:
    """A 64x32 RGB image of a few coloured blocks (distinct per seed)."""
    rng = np.random.default_rng(seed)
    image = np.full((*SIZE, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, SIZE[0] - 8), rng.integers(0, SIZE[1] - 8)
        image[y:y + rng.integers(8, 30), x:x + rng.integers(6, 20)] = rng.integers(0, 256, 3)
    return image


def write_rgb(path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained-model folder (model.pt as the train stage writes it + model.json), a gallery folder
    holding a lossless copy of the query among distractors, and the query image."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = build_model("baseline", 5, CFG).eval()
    folder = root / "models" / "baseline"
    folder.mkdir(parents=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / "model.pt")
    write_model_info(folder, model_info("baseline", CFG, SIZE))
    gallery = root / "gallery"
    for i in range(5):
        write_rgb(gallery / f"g{i}.png", person_like(i))
    write_rgb(gallery / "sub" / "g5.jpg", person_like(5))
    query = person_like(42)
    write_rgb(gallery / "m_dup.png", query)
    write_rgb(root / "query.png", query)
    return {"root": root, "model": model, "folder": folder, "gallery": gallery, "query": root / "query.png"}


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def gallery_file(world):
    out = world["root"] / "gallery.parquet"
    assert main(["embed", "--model", str(world["folder"]), str(world["gallery"]), "--out", str(out),
                 "--batch-size", "3"]) == 0
    return out


def test_embed_folder_writes_ids_paths_features_and_metadata(world, gallery_file) -> None:
    table = pq.read_table(gallery_file)
    ids = table["image_id"].to_pylist()
    assert ids == ["g0.png", "g1.png", "g2.png", "g3.png", "g4.png", "m_dup.png", "sub/g5.jpg"]
    paths = table["path"].to_pylist()
    assert all(p.endswith(i) for p, i in zip(paths, ids, strict=True))
    features = np.array(table["feature"].to_pylist(), np.float32)
    assert features.shape == (7, 512)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)  # cosine: stored normalised
    meta = parquet_metadata(gallery_file)
    assert (meta["model"], meta["metric"], meta["flip"], meta["size"]) == ("baseline", "cosine", "True", "64x32")
    # the stored embedding is the model's flip-averaged feature of the eval-transformed image
    image = eval_transform(SIZE)(read_image(paths[6]))[None]
    expected = embed(world["model"].inference_model(), image, flip=True)[0].numpy()
    np.testing.assert_allclose(features[6], expected / np.linalg.norm(expected), atol=1e-5)


def test_search_finds_the_planted_duplicate_at_rank_1_and_draws(world, gallery_file, capsys) -> None:
    drawing = world["root"] / "ranked.png"
    code, out, err = run(["search", "--model", world["folder"], "--gallery", gallery_file, world["query"],
                          "--top-k", 3, "--draw", drawing], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "query query.png" and lines[1] == "rank\timage_id\tdistance"
    ranked = [line.split("\t") for line in lines[2:5]]
    assert [r[0] for r in ranked] == ["1", "2", "3"]
    assert ranked[0][1] == "m_dup.png" and float(ranked[0][2]) < 1e-5
    assert float(ranked[1][2]) > 1e-4  # the others are really further away
    picture = read_image(drawing)
    assert picture.shape[1] == 4 * (SIZE[1] + 2) + 2  # query + top-3 in one row


def stage_like_gallery(gallery_file, out, meta: dict) -> None:
    """`gallery_file`'s features as data/features/<name>.parquet holds them: raw, no path column, no metric."""
    table = pq.read_table(gallery_file)
    scaled = np.array(table["feature"].to_pylist(), np.float32) * np.arange(1, 8, dtype=np.float32)[:, None]
    write_parquet_atomic(out, pa.table({
        "image_id": table["image_id"],
        "feature": pa.FixedSizeListArray.from_arrays(pa.array(scaled.reshape(-1)), scaled.shape[1])}), meta)


def test_embed_records_the_weights_path_and_hash(world, gallery_file) -> None:
    meta = parquet_metadata(gallery_file)
    weights = world["folder"] / "model.pt"
    assert meta["model_sha256"] == file_sha256(weights) and meta["weights"] == weights.as_posix()


def test_search_reads_a_features_stage_file(world, gallery_file, tmp_path, capsys) -> None:
    """data/features/<name>.parquet: raw features, no path column, no metric recorded -> cosine."""
    stage_file = tmp_path / "features.parquet"
    stage_like_gallery(gallery_file, stage_file, feature_metadata(model="baseline", network="baseline", flip=True,
                                                                  size=SIZE, weights=world["folder"] / "model.pt"))
    code, out, err = run(["search", "--model", world["folder"], "--gallery", stage_file, world["query"]], capsys)
    assert code == 0 and "warning" not in err, err
    ranked = [line.split("\t") for line in out.splitlines()[2:]]
    assert len(ranked) == 7 and ranked[0][1] == "m_dup.png" and float(ranked[0][2]) < 1e-5
    code, _, err = run(["search", "--model", world["folder"], "--gallery", stage_file, world["query"],
                        "--draw", tmp_path / "r.png"], capsys)
    assert code == 2 and "has no 'path' column" in err


def test_search_leaves_out_the_query_rows_of_a_features_stage_file(world, gallery_file, tmp_path, capsys) -> None:
    """data/features/<m>.parquet holds query and gallery rows (ids query/..., gallery/...): the query's own
    row must not come back at rank 1."""
    table = pq.read_table(gallery_file)
    ids = [f"query/{i}" if i == "m_dup.png" else f"gallery/{i}" for i in table["image_id"].to_pylist()]
    stage_file = tmp_path / "features.parquet"
    write_parquet_atomic(stage_file, table.set_column(0, "image_id", pa.array(ids)),
                         feature_metadata(model="baseline", network="baseline", flip=True, size=SIZE,
                                          weights=world["folder"] / "model.pt"))
    code, out, err = run(["search", "--model", world["folder"], "--gallery", stage_file, world["query"]], capsys)
    assert code == 0, err
    ranked = [line.split("\t")[1] for line in out.splitlines()[2:]]
    assert len(ranked) == 6 and "query/m_dup.png" not in ranked
    assert "searching its 6 gallery rows, not its 1 query rows" in err
    code, out, _ = run(["search", "--model", world["folder"], "--gallery", stage_file, world["query"], "--all-rows"],
                       capsys)
    assert code == 0 and out.splitlines()[2].split("\t")[1] == "query/m_dup.png"


def test_search_refuses_a_gallery_embedded_by_other_weights(world, gallery_file, tmp_path, capsys) -> None:
    """E.g. `--model data/models/baseline2b --gallery data/features/dsa.parquet`: same shapes, other weights."""
    torch.manual_seed(1)
    other = tmp_path / "models" / "baseline2"
    other.mkdir(parents=True)
    torch.save(build_model("baseline", 5, CFG).state_dict(), other / "model.pt")
    write_model_info(other, model_info("baseline", CFG, SIZE))
    stage_file = tmp_path / "features" / "other.parquet"
    stage_like_gallery(gallery_file, stage_file, feature_metadata(model="baseline", network="baseline", flip=True,
                                                                  size=SIZE, weights=other / "model.pt"))
    code, out, err = run(["search", "--model", world["folder"], "--gallery", stage_file, world["query"]], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("reid search: error: ")
    assert f"{stage_file} was embedded by {(other / 'model.pt').as_posix()}" in err
    assert f"not by {world['folder'] / 'model.pt'}" in err and "--force" in err
    code, out, err = run(["search", "--model", world["folder"], "--gallery", stage_file, world["query"], "--force"],
                         capsys)
    assert code == 0 and out.startswith("query query.png"), err


def test_search_checks_the_model_name_of_a_gallery_without_a_weights_hash(world, gallery_file, tmp_path,
                                                                          capsys) -> None:
    legacy = tmp_path / "dsa.parquet"  # a features-stage file from before the hash: dsa's MF-Stream features
    stage_like_gallery(gallery_file, legacy, {"model": "dsa", "network": "dsa", "flip": True, "size": "64x32"})
    code, _, err = run(["search", "--model", world["folder"], "--gallery", legacy, world["query"]], capsys)
    assert code == 2 and "embedded by a 'dsa' model, not by" in err and str(world["folder"] / "model.pt") in err
    stage_like_gallery(gallery_file, legacy, {"model": "baseline", "flip": True, "size": "64x32"})
    code, _, err = run(["search", "--model", world["folder"], "--gallery", legacy, world["query"]], capsys)
    assert code == 0 and "warning: " in err and "records no weights hash" in err


def test_export_onnx_without_the_export_extra_is_one_line(world, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails, as when it is not installed
    out = tmp_path / "baseline.onnx"
    code, stdout, err = run(["export", "--model", world["folder"], "--format", "onnx", "--out", out], capsys)
    assert code == 2 and stdout == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("reid export: error: ") and "[export] extra" in err
    assert not out.exists()


def test_embed_l2_without_flip_stores_the_raw_feature(world, gallery_file, tmp_path) -> None:
    out = tmp_path / "g.parquet"
    assert main(["embed", "--model", str(world["folder"] / "model.pt"), "--metric", "l2", "--no-flip",
                 str(world["gallery"] / "g0.png"), "--out", str(out)]) == 0
    raw = np.array(pq.read_table(out)["feature"].to_pylist(), np.float32)[0]
    stored = np.array(pq.read_table(gallery_file)["feature"].to_pylist(), np.float32)[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3  # l2: raw features
    image = eval_transform(SIZE)(read_image(world["gallery"] / "g0.png"))[None]
    np.testing.assert_allclose(raw, embed(world["model"].inference_model(), image)[0].numpy(), atol=1e-5)
    assert not np.allclose(raw / np.linalg.norm(raw), stored, atol=1e-4)  # flip was off here
    assert parquet_metadata(out)["flip"] == "False" and parquet_metadata(out)["metric"] == "l2"


def test_a_model_without_model_json_is_refused_in_one_line(world, tmp_path, capsys) -> None:
    """model.json is the network's one description: no params file stands in for it."""
    folder = tmp_path / "baseline"
    folder.mkdir()
    (folder / "model.pt").write_bytes((world["folder"] / "model.pt").read_bytes())
    for model in (folder, folder / "model.pt"):
        code, _, err = run(["embed", "--model", model, world["query"], "--out", tmp_path / "g.parquet"], capsys)
        assert code == 2 and f"no {folder / 'model.json'} beside {folder / 'model.pt'}" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit):  # the option is gone
        main(["embed", "--model", str(folder), "--params", "params.yaml", str(world["query"]), "--out", "x"])
    capsys.readouterr()


def test_export_onnx_from_the_command_line(world, tmp_path, capsys) -> None:
    out = tmp_path / "baseline.onnx"
    code, stdout, err = run(["export", "--model", world["folder"], "--format", "onnx", "--out", out], capsys)
    assert code == 0, err
    assert "onnx" in stdout
    images = torch.randn(2, 3, *SIZE)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, world["model"].forward_features(images).numpy(), atol=1e-4, rtol=0)


def bad_cases(world, tmp_path) -> dict[str, tuple[list, str]]:
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    empty_gallery = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(world["root"] / "gallery.parquet").slice(0, 0), empty_gallery)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    folder, gallery, query = world["folder"], world["root"] / "gallery.parquet", world["query"]
    out = tmp_path / "o.parquet"
    return {
        "missing model": (["embed", "--model", tmp_path / "nope", query, "--out", out], "no model weights"),
        "wrong model name": (["embed", "--model", folder, "--name", "dsa", query, "--out", out],
                             "describes model 'baseline', not 'dsa'"),
        "wrong image type": (["embed", "--model", folder, not_image, "--out", out], "not a .jpg/.png"),
        "unreadable image": (["embed", "--model", folder, broken, "--out", out], "unreadable or truncated"),
        "missing image": (["embed", "--model", folder, tmp_path / "x.png", "--out", out], "no such image"),
        "empty folder": (["embed", "--model", folder, empty_dir, "--out", out], "no .jpg/.png images"),
        "empty gallery": (["search", "--model", folder, "--gallery", empty_gallery, query], "gallery is empty"),
        "not a gallery": (["search", "--model", folder, "--gallery", garbage, query], "not a readable Parquet"),
        "bad query": (["search", "--model", folder, "--gallery", gallery, broken], "unreadable or truncated"),
        "bad top-k": (["search", "--model", folder, "--gallery", gallery, query, "--top-k", 0], "--top-k"),
        "bad picture type": (["search", "--model", folder, "--gallery", gallery, query, "--draw", tmp_path / "r.gif"],
                             "must be a .png or .jpg"),
    }


def test_bad_input_gives_one_line_error_and_nonzero_exit(world, gallery_file, tmp_path, capsys) -> None:
    for case, (argv, message) in bad_cases(world, tmp_path).items():
        code, _, err = run(argv, capsys)
        assert code != 0, case
        assert message in err, (case, err)
        assert "Traceback" not in err, (case, err)
        message_line = err.rstrip("\n").split("\r")[-1]  # after tqdm's cleared progress line, if any
        assert message_line.startswith(f"reid {argv[0]}: error: ") and "\n" not in message_line, (case, err)


def test_weights_of_another_model_are_refused(world, tmp_path, capsys) -> None:
    folder = tmp_path / "dsa"
    folder.mkdir()
    (folder / "model.pt").write_bytes((world["folder"] / "model.pt").read_bytes())
    write_model_info(folder, model_info("dsa", CFG, SIZE, dsap_size=8))  # says dsa, holds baseline weights
    code, _, err = run(["export", "--model", folder, "--format", "torchscript", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "does not hold a 'dsa' model" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()
