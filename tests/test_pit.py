import numpy as np
import pytest
from layouts import make_pit, truncate, write_dummy

from reid.data.datasets import DatasetError
from reid.data.pit import PitPair, load_pit_pairs, read_iuv, read_pit_pair
from reid.io import ImageReadError


def test_pairs_sorted_by_stem_and_read(tmp_path):
    root = make_pit(tmp_path, stems=("b00", "a01", "a00"))
    pairs = load_pit_pairs(root)
    assert [p.stem for p in pairs] == ["a00", "a01", "b00"]
    assert pairs[1] == PitPair("a01", root / "images/a01.png", root / "textures/a01.png", root / "gt_iuv/a01.png")
    image, texture, iuv = read_pit_pair(pairs[1])
    assert image.shape == (16, 8, 3) and texture.shape == (24, 16, 3) and image.dtype == np.uint8
    assert iuv.shape == (16, 8, 3)
    stem_index = ["b00", "a01", "a00"].index("a01")  # the generator's value for this stem
    assert tuple(iuv[8, 3]) == (stem_index + 1, 10 * stem_index, 255 - stem_index)  # no channel swap
    assert tuple(iuv[0, 0]) == (0, 0, 0)


def test_without_gt_iuv_and_mixed_suffixes(tmp_path):
    root = make_pit(tmp_path, iuv=False)
    (root / "images" / "a00.png").unlink()
    write_dummy(root / "images" / "a00.jpg")  # a real PIT set may ship JPEG person images
    (root / "images" / "notes.txt").write_text("ignored")
    pairs = load_pit_pairs(root)
    assert [p.gt_iuv for p in pairs] == [None] * 3
    assert pairs[0].image.name == "a00.jpg"
    assert read_pit_pair(pairs[0])[2] is None


def test_unpaired_stems_all_listed(tmp_path):
    root = make_pit(tmp_path)
    (root / "textures" / "a01.png").unlink()
    (root / "gt_iuv" / "b00.png").unlink()
    write_dummy(root / "textures" / "zz9.png")
    with pytest.raises(DatasetError, match="3 unpaired") as err:
        load_pit_pairs(root)
    msg = str(err.value)
    assert "a01 (missing in textures)" in msg and "b00 (missing in gt_iuv)" in msg
    assert "zz9 (missing in images, gt_iuv)" in msg


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=f"folder not found: {tmp_path / 'x'}"):
        load_pit_pairs(tmp_path / "x")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=f"no images in folder: {tmp_path / 'images'}"):
        load_pit_pairs(tmp_path)
    root = make_pit(tmp_path / "p")
    write_dummy(root / "images" / "a00.jpg")
    with pytest.raises(DatasetError, match="two files with stem 'a00'"):
        load_pit_pairs(root)


def test_bad_files_name_the_path(tmp_path):
    root = make_pit(tmp_path)
    pairs = load_pit_pairs(root)
    truncate(pairs[0].texture)
    with pytest.raises(ImageReadError, match="a00.png"):
        read_pit_pair(pairs[0])
    write_dummy(pairs[1].gt_iuv, size=(8, 8))
    with pytest.raises(ImageReadError, match="differs"):
        read_pit_pair(pairs[1])
    pairs[2].gt_iuv.write_bytes(b"")
    with pytest.raises(ImageReadError, match="b00.png"):
        read_iuv(pairs[2].gt_iuv)
    with pytest.raises(ImageReadError, match="not found"):
        read_iuv(tmp_path / "none.png")
