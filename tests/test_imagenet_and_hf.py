"""Downsampled ImageNet (npz batches; van den Oord's PNG folders) and Hugging Face datasets, read from
files these tests write in the published layouts; train, classify and evaluate end to end on the
npz layout; every bad file one line naming it; two torchrun ranks sharing one cache entry."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from cpixelcnn.cli import main
from cpixelcnn.data import DataError, has_split, load_dataset

SIDE = 8


def write_imagenet_npz(root, side=SIDE, per_batch=(5, 4, 4, 4, 4, 4, 4, 4, 4, 6), val=7, seed=0, split_train=False):
    """The Chrabaszcz et al. layout: train_data_batch_1..10.npz (data, labels 1..1000, mean) and
    val_data.npz; with ``split_train`` the training batches lie in two folders, as the 64 px archives unpack."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {"train": ([], []), "validation": ([], [])}
    for i, n in enumerate(per_batch, 1):
        folder = root / (f"Imagenet{side}_train_part{1 + (i > 5)}" if split_train else "")
        folder.mkdir(exist_ok=True)
        data, labels = rng.integers(0, 256, (n, 3 * side * side), dtype=np.uint8), rng.integers(1, 1001, n)
        np.savez(folder / f"train_data_batch_{i}.npz", data=data, labels=labels, mean=data.mean(0))
        written["train"][0].append(data)
        written["train"][1].append(labels)
    data, labels = rng.integers(0, 256, (val, 3 * side * side), dtype=np.uint8), rng.integers(1, 1001, val)
    np.savez_compressed(root / "val_data.npz", data=data, labels=labels)
    written["validation"] = ([data], [labels])
    return {k: (np.concatenate(d), np.concatenate(lab)) for k, (d, lab) in written.items()}


@pytest.mark.parametrize("split_train", [False, True], ids=["one folder", "two archives"])
def test_npz_batches_read_as_published(tmp_path, split_train):
    written = write_imagenet_npz(tmp_path / "inet", split_train=split_train)
    for split in ("train", "validation"):
        ds = load_dataset(f"imagenet{SIDE}:{tmp_path / 'inet'}", split, SIDE)
        data, labels = written[split]
        assert ds.images.shape == (len(data), 3, SIDE, SIDE)
        assert np.array_equal(ds.images.numpy().reshape(len(data), -1), data)  # all red, then green, then blue
        assert ds.labels.tolist() == (labels - 1).tolist() and ds.class_names[:2] == ["1", "2"] and len(ds.class_names) == 1000
    assert has_split(f"imagenet{SIDE}:{tmp_path / 'inet'}", "validation") and not has_split(f"imagenet{SIDE}:{tmp_path / 'inet'}", "test")


def test_npz_batches_resized_and_grey(tmp_path):
    write_imagenet_npz(tmp_path / "inet")
    ds = load_dataset(f"imagenet{SIDE}:{tmp_path / 'inet'}", "validation", 4, channels=1)
    assert ds.images.shape == (7, 1, 4, 4) and ds.images.dtype == torch.uint8


def _break(path, how):
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "not a zip":
        path.write_bytes(b"hello")
    elif how == "corrupt data":  # a byte of the stored data array flipped: the member's CRC no longer matches
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("data.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        path.write_bytes(raw[:start] + bytes([raw[start] ^ 0xFF]) + raw[start + 1 :])


@pytest.mark.parametrize("how", ["truncated", "not a zip", "corrupt data"])
def test_a_damaged_npz_is_one_line_naming_it(tmp_path, how):
    write_imagenet_npz(tmp_path / "inet")
    target = tmp_path / "inet" / "train_data_batch_3.npz"
    _break(target, how)
    with pytest.raises(DataError, match=r"train_data_batch_3\.npz"):
        load_dataset(f"imagenet{SIDE}:{tmp_path / 'inet'}", "train", SIDE)


@pytest.mark.parametrize("labels,message", [
    (np.array([0, 1, 2, 3]), r"label 0 of image 0 is outside 1\.\.1000"),
    (np.array([1, 2, 1001, 3]), r"label 1001 of image 2 is outside 1\.\.1000"),
    (np.array([1.5, 2, 3, 4]), "must be integers"),
    (np.array([1, 2, 3]), "holds 4 images but 'labels' 3"),
])  # fmt: skip
def test_bad_labels_are_one_line(tmp_path, labels, message):
    write_imagenet_npz(tmp_path / "inet")
    np.savez(tmp_path / "inet" / "val_data.npz", data=np.zeros((4, 3 * SIDE * SIDE), dtype=np.uint8), labels=labels)
    with pytest.raises(DataError, match=message):
        load_dataset(f"imagenet{SIDE}:{tmp_path / 'inet'}", "validation", SIDE)


def test_missing_batches_other_sizes_pickles_and_splits_are_one_line(tmp_path):
    root = tmp_path / "inet"
    write_imagenet_npz(root)
    with pytest.raises(DataError, match="holds imagenet8: use --data imagenet8:DIR"):
        load_dataset(f"imagenet32:{root}", "validation", 32)
    with pytest.raises(DataError, match="no test split"):
        load_dataset(f"imagenet{SIDE}:{root}", "test", SIDE)
    np.savez(root / "val_data.npz", data=np.array([object()] * 4), labels=np.array([1, 2, 3, 4]))
    with pytest.raises(DataError, match="val_data.npz"):  # an object array would need a pickle: refused
        load_dataset(f"imagenet{SIDE}:{root}", "validation", SIDE)
    (root / "train_data_batch_10.npz").unlink()
    with pytest.raises(DataError, match="train_data_batch_10.npz not found"):
        load_dataset(f"imagenet{SIDE}:{root}", "train", SIDE)


def test_a_batch_changed_after_caching_is_read_again(tmp_path):
    root = tmp_path / "inet"
    write_imagenet_npz(root)
    before = load_dataset(f"imagenet{SIDE}:{root}", "validation", SIDE).images.clone()
    np.savez(root / "val_data.npz", data=np.full((7, 3 * SIDE * SIDE), 9, dtype=np.uint8), labels=np.arange(1, 8))
    after = load_dataset(f"imagenet{SIDE}:{root}", "validation", SIDE)
    assert (after.images == 9).all() and not torch.equal(before, after.images) and after.labels.tolist() == list(range(7))


TINY = ["--image-size", str(SIDE), "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "8", "--device", "cpu"]


def test_train_classify_and_evaluate_on_the_npz_layout(tmp_path, capsys):
    write_imagenet_npz(tmp_path / "inet", val=3)
    data, run = f"imagenet{SIDE}:{tmp_path / 'inet'}", tmp_path / "run"
    assert main(["train", "--data", data, "--out", str(run), "--max-steps", "2", "--val-limit", "3", *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert len(config["class_names"]) == 1000 and config["model"]["num_classes"] == 1000
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(run), "--data", data, "--split", "validation", "--json", "--batch-size", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 3 and 0.0 <= result["accuracy"] <= 1.0
    rows = (run / "predictions_validation.csv").read_text().splitlines()
    assert rows[0].startswith("file,predicted,class,true,true_class,loglik_1,") and len(rows) == 4
    assert main(["evaluate", "--checkpoint", str(run), "--data", data, "--json", "--batch-size", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    assert main(["classify", "--checkpoint", str(run), "--data", data]) == 2  # the default split, test, is not published
    assert "no test split" in capsys.readouterr().err


def test_van_den_oords_png_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("valid", 3)):
        (tmp_path / "small" / f"{split}_32x32").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "small" / f"{split}_32x32" / f"{i:05d}.png")
    train = load_dataset(str(tmp_path / "small"), "train", 32)
    val = load_dataset(str(tmp_path / "small"), "validation", 16)
    assert len(train) == 5 and not train.has_labels and train.layout == "small-imagenet" and val.images.shape == (3, 3, 16, 16)
    assert has_split(str(tmp_path / "small"), "validation") and not has_split(str(tmp_path / "small"), "test")
    expected = np.asarray(Image.open(tmp_path / "small" / "train_32x32" / "00002.png")).transpose(2, 0, 1)
    assert np.array_equal(train.images[2].numpy(), expected)


# -- Hugging Face ---------------------------------------------------------------------------------


def write_hf(folder, n=(6, 3), names=("cat", "dog", "fox"), image_column="img", label_column="label", single=False):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)

    def split(count, offset):
        images = [Image.fromarray(np.full((SIDE, SIDE, 3), offset + i, dtype=np.uint8)) for i in range(count)]
        labels = [int(v) for v in rng.integers(0, len(names), count)]
        features = datasets.Features(
            {image_column: datasets.Image(), label_column: datasets.ClassLabel(names=list(names)), "note": datasets.Value("string")}
        )
        return datasets.Dataset.from_dict({image_column: images, label_column: labels, "note": ["x"] * count}, features=features), labels

    train, train_labels = split(n[0], 0)
    if single:
        train.save_to_disk(str(folder))
        return {"train": train_labels}
    test, test_labels = split(n[1], 100)
    datasets.DatasetDict({"train": train, "valid": test}).save_to_disk(str(folder))
    return {"train": train_labels, "validation": test_labels}


def test_a_saved_hugging_face_dataset_dict(tmp_path):
    labels = write_hf(tmp_path / "hf")
    train = load_dataset(f"hf:{tmp_path / 'hf'}", "train", SIDE)
    val = load_dataset(f"hf:{tmp_path / 'hf'}", "validation", SIDE)  # the split called "valid"
    assert train.class_names == ["cat", "dog", "fox"] and train.labels.tolist() == labels["train"] and len(val) == 3
    assert train.images[:, 0, 0, 0].tolist() == list(range(6)) and val.images[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert has_split(f"hf:{tmp_path / 'hf'}", "validation") and not has_split(f"hf:{tmp_path / 'hf'}", "test")
    with pytest.raises(DataError, match="has no test split"):
        load_dataset(f"hf:{tmp_path / 'hf'}", "test", SIDE)


def test_hugging_face_columns_found_or_named(tmp_path):
    write_hf(tmp_path / "hf", image_column="photo", label_column="kind", single=True)
    ds = load_dataset(f"hf:{tmp_path / 'hf'}", "train", SIDE)  # found by their features
    assert len(ds) == 6 and ds.class_names == ["cat", "dog", "fox"]
    unlabelled = load_dataset(f"hf:{tmp_path / 'hf'}?image=photo&label=none", "train", SIDE)
    assert not unlabelled.has_labels
    with pytest.raises(DataError, match="no label column 'species'"):
        load_dataset(f"hf:{tmp_path / 'hf'}?label=species", "train", SIDE)
    with pytest.raises(DataError, match="unknown option 'colour'"):
        load_dataset(f"hf:{tmp_path / 'hf'}?colour=red", "train", SIDE)
    with pytest.raises(DataError, match="single saved dataset"):
        load_dataset(f"hf:{tmp_path / 'hf'}", "validation", SIDE)


def test_a_damaged_hugging_face_folder_is_one_line(tmp_path):
    write_hf(tmp_path / "hf")
    (arrow,) = (tmp_path / "hf" / "train").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(DataError, match=str(tmp_path / "hf")):
        load_dataset(f"hf:{tmp_path / 'hf'}", "train", SIDE)


def test_train_on_a_hugging_face_folder_from_the_command_line(tmp_path):
    write_hf(tmp_path / "hf", n=(8, 3))
    run = tmp_path / "run"
    assert main(["train", "--data", f"hf:{tmp_path / 'hf'}", "--out", str(run), "--max-steps", "1", *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["class_names"] == ["cat", "dog", "fox"]


@pytest.mark.slow
def test_two_torchrun_ranks_share_one_cache_entry(tmp_path):
    """Both ranks read the same folder: one builds the entry (the other waits for it), both map it."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, time\n"
        "import cpixelcnn.data.cache as c\n"
        "real = c.build\n"
        "def build(*args):\n"
        "    print('built by rank', os.environ.get('RANK'), flush=True); time.sleep(1); return real(*args)\n"
        "c.build = build\n"
    )
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    argv = [
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "2",
        "--val-data",
        "none",
        "--data-cache",
        str(cache),
        *TINY,
    ]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29521", "-m", "cpixelcnn", "train", *argv],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("built by rank") == 1
    assert len(list(cache.glob("cpixelcnn-*.npy"))) == 1 and len(list(cache.glob("cpixelcnn-*.json"))) == 1
