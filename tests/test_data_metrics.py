"""Data layouts, augmentation, and the Fréchet distance against closed forms."""

import math

import pytest
import torch

from cpixelcnn.data import DataError, augment, builtin_dataset, load_dataset
from cpixelcnn.metrics import FIDUnavailable, classification_report, feature_statistics, frechet_distance, inception_extractor

from helpers import make_course_layout, make_folders


def test_builtin_is_deterministic_and_balanced():
    a, la, names = builtin_dataset(5, size=16, seed=3)
    b, lb, _ = builtin_dataset(5, size=16, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert names == ["stripes", "checker", "disc", "diagonal"]
    assert torch.bincount(la).tolist() == [5, 5, 5, 5]


def test_course_layout(tmp_path):
    root = make_course_layout(tmp_path)
    train = load_dataset(str(root), "train", size=12)
    assert train.layout == "course" and len(train) == 8 and train.has_labels
    assert train.class_names == ["Class0", "Class1", "Class2", "Class3"]
    test = load_dataset(str(root), "test", size=12)
    assert not test.has_labels and test.files[0] == "0000012.jpg"
    (root / "classes.txt").write_text("burger\npizza\npanda\nkoala\n")
    assert load_dataset(str(root), "validation", size=12).class_names == ["burger", "pizza", "panda", "koala"]
    resized = load_dataset(str(root), "train", size=7)
    assert resized.images.shape == (8, 3, 7, 7)


def test_image_folders_and_their_errors(tmp_path):
    root = make_folders(tmp_path / "data")
    ds = load_dataset(str(root), size=8, channels=1)
    assert ds.images.shape == (6, 1, 8, 8) and ds.class_names == ["cats", "dogs"]  # mixed sizes are resized
    with pytest.raises(DataError, match="class folder 'dogs' is not a class of this model"):
        load_dataset(str(root), size=8, class_names=["cats", "birds"])
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(str(root), size=8)
    (root / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset(str(root), size=8)
    unlabelled = load_dataset(str(tmp_path / "data" / "cats"), size=8)  # images without class folders: unlabelled
    assert len(unlabelled) == 3 and not unlabelled.has_labels and unlabelled.files == ["0.png", "1.png", "2.png"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no class folders and no images"):
        load_dataset(str(tmp_path / "nothing"), size=8)
    with pytest.raises(DataError, match="split must be one of"):
        load_dataset("demo", "holdout")


def test_course_csv_errors(tmp_path):
    root = make_course_layout(tmp_path)
    (root / "train.csv").write_text("0000000.jpg,cat\n")
    with pytest.raises(DataError, match="label 'cat' is not an integer"):
        load_dataset(str(root), "train", size=12)
    (root / "train.csv").write_text("0000000.jpg,1\nmissing.jpg,0\n")
    with pytest.raises(DataError, match="cannot read image .*missing.jpg"):
        load_dataset(str(root), "train", size=12)


def test_augment_keeps_the_grid_and_flips():
    images, _, _ = builtin_dataset(4, size=8)
    out = augment(images, torch.Generator().manual_seed(0), jitter=0)
    flipped = (out != images).flatten(1).any(1)
    assert torch.equal(out[flipped], images[flipped].flip(-1))
    assert 0 < flipped.sum() < len(images)
    jittered = augment(images, torch.Generator().manual_seed(0), flip=False, jitter=10)
    assert jittered.dtype == torch.uint8 and (jittered.int() - images.int()).abs().max() <= 10


def test_classification_report():
    report = classification_report(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), ["a", "b", "c"])
    assert report["accuracy"] == 0.75 and report["n"] == 4
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert report["per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": 0.5}


# -- Fréchet distance ----------------------------------------------------------------------------


def test_fid_closed_forms():
    d = 5
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    a = torch.rand(d, dtype=torch.float64) + 0.1
    b = torch.rand(d, dtype=torch.float64) + 0.1
    # diagonal covariances commute: tr sqrt(S1 S2) = sum sqrt(a b)
    expected = (mu1 - mu2).square().sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected.item(), rel=1e-10)
    # same Gaussian: zero; pure mean shift: squared distance
    m = torch.randn(d, d, dtype=torch.float64)
    s = m @ m.T
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx((mu1 - mu2).square().sum().item(), rel=1e-8)
    # rotation invariance
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    s2 = torch.diag(b)
    assert frechet_distance(mu1, q @ s @ q.T, mu2, q @ s2 @ q.T) == pytest.approx(frechet_distance(q.T @ mu1, s, q.T @ mu2, s2), rel=1e-8)


def test_fid_is_real_and_finite_for_singular_and_tiny_covariances():
    """100 samples in 192 dimensions (rank ≤ 99) and near-constant samples: where sqrtm goes complex."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(100, 192, generator=gen, dtype=torch.float64)
    fake = 1e-6 * torch.randn(100, 192, generator=gen, dtype=torch.float64) + 0.5
    value = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    assert math.isfinite(value) and value > 0
    # rank-1 against rank-1 covariances with a known answer: N(0, u uᵀ) vs N(0, v vᵀ), u ⟂ v
    u, v = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    u[0], v[1] = 2.0, 3.0
    assert frechet_distance(torch.zeros(4), torch.outer(u, u), torch.zeros(4), torch.outer(v, v)) == pytest.approx(13.0, rel=1e-10)
    assert frechet_distance(torch.zeros(4), torch.zeros(4, 4), torch.zeros(4), torch.zeros(4, 4)) == 0.0


def test_fid_input_errors():
    with pytest.raises(ValueError, match="vectors of one length"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.zeros(2), torch.full((2, 2), float("nan")), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(torch.zeros(1, 3))


def test_fid_extractor_says_what_is_missing():
    try:
        inception_extractor(192)
    except FIDUnavailable as err:
        assert "pytorch-fid" in str(err) or "weights" in str(err)
    with pytest.raises(ValueError, match="--fid-dims"):
        inception_extractor(100)
