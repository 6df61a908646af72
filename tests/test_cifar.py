"""CIFAR-10/100 loaders on files written in exactly the published formats (tests/cifar_files.py)."""

import json
import pickle

import numpy as np
import pytest
import torch

from cpixelcnn.data import DataError, load_dataset
from cpixelcnn.data.cifar import SafeUnpickler, load_cifar

from cifar_files import (
    CIFAR10_NAMES,
    CIFAR100_COARSE,
    CIFAR100_FINE,
    py2_pickle,
    write_cifar10_binary,
    write_cifar10_python,
    write_cifar100_binary,  # fmt: skip
    write_cifar100_python,
)


def as_images(rows: np.ndarray) -> torch.Tensor:
    """The published layout: 1024 red, 1024 green, 1024 blue values, each 32×32 row-major."""
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32).copy())


def test_the_fixture_is_what_python_reads_from_a_python2_pickle(tmp_path):
    # the fixture must be what the published loading recipe reads (pickle.load(encoding="bytes"))
    write_cifar10_python(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (4, 3072)


@pytest.mark.parametrize("write", [write_cifar10_python, write_cifar10_binary])
def test_cifar10_splits_labels_and_names_are_the_published_ones(tmp_path, write):
    written = write(tmp_path)
    for split in ("train", "test"):
        images, labels, names = load_cifar("cifar10", tmp_path, split)
        assert names == CIFAR10_NAMES
        assert torch.equal(images, as_images(written[split][0]))
        assert labels.tolist() == written[split][1].tolist()
    assert len(load_cifar("cifar10", tmp_path, "train")[1]) == 5 * 4  # all five training batches, in order


@pytest.mark.parametrize("write", [write_cifar100_python, write_cifar100_binary])
def test_cifar100_fine_and_coarse_labels(tmp_path, write):
    written = write(tmp_path)
    for split in ("train", "test"):
        images, fine, names = load_cifar("cifar100", tmp_path, split)
        assert torch.equal(images, as_images(written[split][0])) and names == CIFAR100_FINE
        assert fine.tolist() == written[split][1].tolist()
        _, coarse, coarse_names = load_cifar("cifar100-coarse", tmp_path, split)
        assert coarse.tolist() == written[split][2].tolist() and coarse_names == CIFAR100_COARSE


def test_the_folder_itself_or_its_parent_may_be_given(tmp_path):
    write_cifar10_python(tmp_path)
    a = load_cifar("cifar10", tmp_path, "test")[0]
    b = load_cifar("cifar10", tmp_path / "cifar-10-batches-py", "test")[0]
    assert torch.equal(a, b)


def test_data_spec_resizes_and_greys_like_other_data(tmp_path):
    write_cifar10_binary(tmp_path)
    ds = load_dataset(f"cifar10:{tmp_path}", "test", size=16, channels=1)
    assert ds.images.shape == (3, 1, 16, 16) and ds.images.dtype == torch.uint8 and ds.class_names == CIFAR10_NAMES
    full = load_dataset(f"cifar10:{tmp_path}", "test")
    assert ds.images.shape[0] == full.images.shape[0] and full.images.shape == (3, 3, 32, 32)


def test_holdout_is_reproducible_disjoint_and_complete(tmp_path):
    write_cifar10_python(tmp_path, per_batch=10)
    spec = f"cifar10:{tmp_path}"
    full = load_dataset(spec, "train")
    train, val = (load_dataset(spec, s, holdout=7) for s in ("train", "validation"))
    assert len(val) == 7 and len(train) == 43
    assert torch.equal(load_dataset(spec, "validation", holdout=7, seed=5).images, val.images)  # the same for every training seed
    together = torch.cat([train.images, val.images]).flatten(1)
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, full.images.flatten(1).tolist()))
    with pytest.raises(DataError, match="has 50 images; hold out fewer"):
        load_dataset(spec, "validation", holdout=50)


def test_missing_files_say_what_to_fetch_and_that_nothing_downloads(tmp_path):
    with pytest.raises(
        DataError, match=r"nothing is downloaded: fetch and unpack either cifar-10-batches-py/ .*cifar-10-python.tar.gz.*cifar-10-binary.tar.gz"
    ):
        load_cifar("cifar10", tmp_path, "train")
    with pytest.raises(DataError, match="has no validation split .* --val-split N"):
        load_cifar("cifar10", tmp_path, "validation")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar10_python(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3 is not a plain CIFAR pickle: it refuses (posix|os)\.system") as err:
        load_cifar("cifar10", tmp_path, "train")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("payload", [b"cbuiltins\neval\n(S'1+1'\ntR.", b"\x80\x02csubprocess\nPopen\n]\x85R."])
def test_the_unpickler_admits_no_other_global(payload):
    import io

    with pytest.raises(pickle.UnpicklingError, match="refuses"):
        SafeUnpickler(io.BytesIO(payload), encoding="bytes").load()


def test_a_damaged_batch_is_one_line(tmp_path):
    write_cifar10_python(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(DataError, match="test_batch is not a CIFAR pickle"):
        load_cifar("cifar10", tmp_path, "test")
    (folder / "test_batch").write_bytes(py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        load_cifar("cifar10", tmp_path, "test")
    (folder / "test_batch").write_bytes(py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    with pytest.raises(DataError, match="label 10 is outside 0..9"):
        load_cifar("cifar10", tmp_path, "test")


def test_a_truncated_binary_batch_is_one_line(tmp_path):
    write_cifar10_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR records"):
        load_cifar("cifar10", tmp_path, "train")


def test_train_on_cifar_with_a_held_out_split_then_classify_the_test_split(tmp_path, capsys):
    from cpixelcnn.cli import main

    write_cifar10_python(tmp_path / "data", per_batch=8)
    spec, run = f"cifar10:{tmp_path / 'data'}", tmp_path / "run"
    tiny = ["--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2", "--batch-size", "8"]
    assert main(["train", "--data", spec, "--out", str(run), "--val-split", "10", "--max-steps", "2", *tiny]) == 0
    said = capsys.readouterr().out
    assert (
        "on 30 images (8x8 RGB, resized from the data's 32x32)" in said
        and "validating on 10 images" in said
        and "10 held-out training images" in said
    )
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_bpd" in line][-1]
    assert record["val_n"] == 10
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(run), "--data", spec, "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3


@pytest.mark.parametrize(
    "value, message", [("0", "--val-split must be one of"), ("-3", "--val-split must be one of"), ("abc", "--val-split must be one of")]
)
def test_a_bad_val_split_is_one_line(tmp_path, capsys, value, message):
    from cpixelcnn.cli import main

    assert main(["train", "--data", "demo", "--out", str(tmp_path / "r"), "--val-split", value, "--max-steps", "1"]) == 2
    assert message in capsys.readouterr().err
