"""The data set describes itself (cpixelcnn.data.registry.Native): every registered format says its
native size, channels, classes and splits — equal to what loading gives — and ``train`` takes its
defaults from them; splits are what they say (a run's own training images are never evaluated as
its test or validation images unasked); names that help (unknown formats, a file for a folder)."""

import json

import numpy as np
import pytest
from PIL import Image

from cpixelcnn.cli import main
from cpixelcnn.data import FORMATS, DataError, DataFormat, load_dataset, register, resolve
from cpixelcnn.data.registry import describe

from cifar_files import write_cifar10_python
from helpers import make_course_layout


def _folder(root, classes=("a", "b"), n=3, size=6, mode="RGB"):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new(mode, (size, size), 30 * i).save(root / c / f"{i}.png")
    return root


def _unlabelled(root, n=3, size=5):
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("L", (size, size), 10 * i).save(root / f"{i}.png")
    return root


def _imagenet(root, side=8, n=6):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"train_data_batch_{b}.npz" for b in range(1, 11)] + ["val_data.npz"]:
        np.savez(root / name, data=rng.integers(0, 256, (n, 3 * side * side), dtype=np.uint8), labels=rng.integers(1, 1001, n))
    return f"imagenet{side}:{root}"


def _small_imagenet(root, side=16, n=3):
    for split in ("train", "valid"):
        folder = root / f"{split}_{side}x{side}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (side, side), (i, 2 * i, 3 * i)).save(folder / f"{i}.png")
    return str(root)


def _hf(root):
    datasets = pytest.importorskip("datasets")
    import io

    def png(i):
        buffer = io.BytesIO()
        Image.new("RGB", (12, 12), (i, i, i)).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    splits = {s: datasets.Dataset.from_dict({"img": [png(i) for i in range(4)], "label": [0, 1, 0, 1]}, features=features) for s in ("train", "test")}
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return f"hf:{root}"


def _sources(tmp_path) -> dict[str, str]:
    """A --data value of every registered format, on files this test writes (or the built-in sets)."""
    cifar = tmp_path / "cifar"
    write_cifar10_python(cifar, per_batch=2, n_test=3)
    return {
        "demo": "demo",
        "digits": "digits",
        "textures": "textures",
        "micrographs": "micrographs",
        "cifar10": f"cifar10:{cifar}",
        "course": str(make_course_layout(tmp_path / "course", size=12)),
        "folders": str(_folder(tmp_path / "tree")),
        "images": str(_unlabelled(tmp_path / "flat")),
        "imagenet8": _imagenet(tmp_path / "in8"),
        "small-imagenet": _small_imagenet(tmp_path / "small"),
        "hf": _hf(tmp_path / "hf"),
    }


def test_every_format_describes_what_loading_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("CPIXELCNN_DATA_CACHE", "off")
    sources = _sources(tmp_path)
    checked = set()
    for name, data in sources.items():
        fmt, _ = resolve(data)
        assert fmt.name == name
        native = describe(data)
        for split in ("train", "validation", "test"):
            assert (split in native.splits) == fmt.has_split(resolve(data)[1], split), (name, split)
        split = native.splits[0] if native.splits else "train"
        size = native.size or 16
        ds = load_dataset(data, split, size, native.channels or 3)
        assert ds.images.shape[1:] == (native.channels or 3, size, size), name
        if native.size is not None:  # the native size: the stored pixels, unresampled
            assert ds.images.shape[-1] == native.size
        if native.class_names is not None:
            assert list(ds.class_names) == list(native.class_names), name
        else:
            assert not ds.has_labels, name
        checked.add(fmt.name)
    # every format module is checked here (cifar100 and imagenet16 describe themselves with cifar10's and imagenet8's code):
    # a new format must add a source above
    modules = {name: FORMATS[name].describe.__module__ for name in FORMATS}
    assert set(modules.values()) <= {modules[name] for name in checked}, sorted(set(modules.values()) - {modules[n] for n in checked})


def test_a_format_registered_without_a_description_is_refused():
    with pytest.raises(TypeError):
        DataFormat("toy", "builtin", "toy", "a toy", lambda r: None, lambda s, split: True)  # no describe
    with pytest.raises(ValueError, match="describe"):
        register(DataFormat("toy", "builtin", "toy", "a toy", lambda r: None, lambda s, split: True, None))
    assert "toy" not in FORMATS


def test_train_takes_the_datas_size_and_channels(tmp_path, capsys):
    common = ["--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "8", "--max-steps", "1", "--device", "cpu",
              "--val-data", "none", "--no-cache"]  # fmt: skip
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "digits"), *common]) == 0
    assert "(8x8 grey, as the data)" in capsys.readouterr().out
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "rgb"), "--image-size", "16", "--channels", "3", *common]) == 0
    assert "(16x16 RGB, resized from the data's 8x8 and converted from grey)" in capsys.readouterr().out
    assert main(["train", "--data", "demo", "--out", str(tmp_path / "demo"), *common]) == 0
    assert "(32x32 RGB, resized (the data has no one size))" in capsys.readouterr().out
    in8 = _imagenet(tmp_path / "in8", n=16)
    assert main(["train", "--data", in8, "--out", str(tmp_path / "in8run"), *common]) == 0
    assert "(8x8 RGB, as the data)" in capsys.readouterr().out


def test_a_runs_own_training_source_is_not_its_test_split(tmp_path, capsys):
    tree = _folder(tmp_path / "data" / "train", n=4)
    _folder(tmp_path / "data" / "test", n=2)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tree), "--out", str(run), "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2",
                 "--batch-size", "4", "--max-steps", "1", "--device", "cpu", "--val-data", "none", "--no-cache"]) == 0  # fmt: skip
    capsys.readouterr()
    for command in ("classify", "evaluate", "score"):
        for split in ("test", "validation"):
            assert main([command, "--checkpoint", str(run), "--data", str(tree) + "/", "--split", split, "--no-cache"]) == 2
            err = capsys.readouterr().err
            assert f"is what {run} was trained on and has no {split} split of its own" in err and "--split train" in err
    assert not list(run.glob("predictions_*.csv"))
    assert main(["classify", "--checkpoint", str(run), "--data", str(tmp_path / "data" / "test"), "--no-cache"]) == 0  # a separate folder: as today
    assert "classified 4 images" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(tree), "--split", "train", "--no-cache", "--json"]) == 0


def test_a_run_that_held_images_out_evaluates_them_as_its_validation_split(tmp_path, capsys):
    tree = _folder(tmp_path / "tree", n=6)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tree), "--out", str(run), "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2",
                 "--batch-size", "4", "--max-steps", "1", "--device", "cpu", "--val-split", "4", "--no-cache"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(tree), "--split", "validation", "--no-cache", "--json"]) == 0
    assert '"n": 4' in capsys.readouterr().out.replace(" ", "").replace('"n":4', '"n": 4')


@pytest.mark.parametrize(
    "data, message",
    [("cifr10:/x", "no data format 'cifr10'; did you mean cifar10"), ("cifar1O:/x", "did you mean cifar10"),
     ("imagenet23:/x", "did you mean imagenet32"), ("digit", "no built-in data set or folder of that name; did you mean digits?")],
)  # fmt: skip
def test_a_mistyped_name_is_its_own_line_with_the_closest_names(data, message):
    with pytest.raises(DataError, match=message.replace("?", r"\?")):
        resolve(data)


def test_a_file_given_as_data_says_it_is_a_file(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("a,1\n")
    with pytest.raises(DataError, match=f"--data {csv} is a file; it takes a folder, a built-in set or FORMAT:DIR"):
        resolve(str(csv))


# -- the smaller points a new user met ------------------------------------------------------------------


def test_version_is_argparses(capsys):
    from cpixelcnn._version import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"cpixelcnn {__version__}"


def test_the_api_says_resume_in_pythons_words(tmp_path):
    from cpixelcnn import notices
    from cpixelcnn.training import TrainConfig, train

    cfg = dict(data="demo", out=str(tmp_path / "r"), image_size=8, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, max_steps=1, val_data="none")
    notices.speaking_command_line(False)
    train(TrainConfig(**cfg), log=lambda *a: None)
    with pytest.raises(ValueError, match=r"pass resume=True \(or resume='auto'\) to continue it, or choose another out"):
        train(TrainConfig(**cfg), log=lambda *a: None)
    assert train(TrainConfig(**cfg, resume="auto"), log=lambda *a: None)["steps"] == 1


def test_evaluate_json_is_rounded_and_a_short_run_writes_its_final_grid(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "demo", "--out", str(run), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2",
                 "--batch-size", "8", "--max-steps", "2", "--sample-every", "1", "--samples-per-class", "1", "--val-data", "none"]) == 0  # fmt: skip
    assert "sample grid of the final model (step 2)" in capsys.readouterr().out and (run / "samples" / "step_00000002.png").is_file()
    assert main(["evaluate", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--json", "--no-cache"]) == 0
    bpd = json.loads(capsys.readouterr().out)["bpd"]
    assert len(repr(bpd).replace(".", "").lstrip("0")) <= 6  # six significant digits, no float32 noise


def test_batch_size_auto_says_when_it_took_the_whole_training_set(tmp_path, capsys):
    tree = _folder(tmp_path / "tree", n=4)
    assert main(["train", "--data", str(tree), "--out", str(tmp_path / "r"), "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2",
                 "--batch-size", "auto", "--max-steps", "1", "--device", "cpu", "--val-data", "none", "--no-cache"]) == 0  # fmt: skip
    assert "took 8 (8 per process), the whole training set (more would fit)" in capsys.readouterr().out
