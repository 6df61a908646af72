"""Images and labels as the user meant them: bombs and bad files are one line, crop before resize,
16-bit and EXIF and alpha handled, course CSVs strict, classes never guessed per split, no shadowing."""

import numpy as np
import pytest
from PIL import Image

from cpixelcnn.data import DataError, load_dataset
from cpixelcnn.data.images import load_image


def test_a_very_long_image_is_cropped_before_it_is_resized(tmp_path):
    path = tmp_path / "long.png"
    Image.fromarray(np.full((1, 200_000), 77, dtype=np.uint8), mode="L").save(path)
    out = load_image(path, 32, 1)  # resizing first would build a 32 x 6,400,000 image
    assert out.shape == (1, 32, 32) and (out == 77).all()


def test_decompression_bombs_are_one_line(tmp_path, monkeypatch):
    import cpixelcnn.data.images as data

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 300), dtype=np.uint8)).save(path)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="more than the 1,000 allowed"):
        load_image(path, 8, 1)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 10**12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own guard: a warning turned into one line
    with pytest.raises(DataError, match="cannot read image .*DecompressionBomb"):
        load_image(path, 8, 1)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257 * 100, 65535, 257 * 200]], dtype=np.uint16).repeat(4, 0)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path, 4, 1)
    assert out[0, 0].tolist() == [0, 100, 255, 200]  # clipping would give 0, 255, 255, 255


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[:, :4] = 255  # left half white, stored landscape
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=100)
    out = load_image(path, 4, 3)  # displayed portrait 4 wide x 8 tall; its centred 4x4 crop spans the seam: top half white
    assert out[:, 0].mean() > 200 and out[:, -1].mean() < 50


def test_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 2:, 3] = 255
    path = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = load_image(path, 4, 3)
    assert out[:, 0, 0].tolist() == [255, 255, 255] and out[:, 0, 2].tolist() == [255, 0, 0]  # transparent → white; opaque red stays red


def _course(tmp_path, rows, split="train", classes=None):
    root = tmp_path / "course"
    (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / split / f"{i:07d}.jpg")
    (root / f"{split}.csv").write_bytes(rows.encode("utf-8"))
    if classes:
        (root / "classes.txt").write_text("\n".join(classes))
    return root


@pytest.mark.parametrize("rows,message", [
    ("../0000000.jpg,0\n", "is not a file name inside train/"),
    ("/etc/passwd,0\n", "is not a file name inside train/"),
    ("sub/0000000.jpg,0\n", "is not a file name inside train/"),
    ("0000000.jpg,0\n0000000.jpg,1\n", "is listed twice"),
    ("0000000.jpg,2000000000\n", "label 2000000000 is outside"),
    ("0000000.jpg,x\n", "is not an integer"),
])  # fmt: skip
def test_course_csv_entries_are_checked(tmp_path, rows, message):
    root = _course(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        load_dataset(str(root), "train", 8)


def test_course_csv_with_a_bom_and_classes_from_the_training_split(tmp_path):
    root = _course(tmp_path, "\ufeff0000000.jpg,0\n0000001.jpg,1\n0000002.jpg,2\n0000003.jpg,1\n")
    ds = load_dataset(str(root), "train", 8)
    assert ds.files[0] == "0000000.jpg" and ds.class_names == ["Class0", "Class1", "Class2"]  # three classes, no phantom fourth
    _course(tmp_path, "0000000.jpg\n0000001.jpg,-1\n", split="test")
    test = load_dataset(str(root), "test", 8)
    assert test.class_names == ["Class0", "Class1", "Class2"] and not test.has_labels  # the same classes on an unlabelled split


def test_a_model_of_other_classes_is_refused(tmp_path):
    with pytest.raises(DataError, match="has classes"):
        load_dataset("demo", "test", 8, class_names=["a", "b", "c"])
    root = _course(tmp_path, "0000000.jpg,0\n0000001.jpg,1\n", classes=["cat", "dog"])
    with pytest.raises(DataError, match="has classes"):
        load_dataset(str(root), "train", 8, class_names=["dog", "cat"])
    assert load_dataset(str(root), "train", 8, class_names=["cat", "dog"]).class_names == ["cat", "dog"]


def test_a_local_folder_named_like_a_built_in_set_is_not_shadowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "demo" / "a" / "x.png")
    with pytest.raises(DataError, match="write ./demo for the folder or builtin:demo"):
        load_dataset("demo", "train", 8)
    assert load_dataset("./demo", "train", 8).class_names == ["a"]
    assert len(load_dataset("builtin:demo", "test", 8)) == 100
    with pytest.raises(DataError, match="no such built-in data set"):
        load_dataset("builtin:nothing", "train", 8)
