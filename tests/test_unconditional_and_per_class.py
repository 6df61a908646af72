"""Unconditional models (``--unconditional``, one class's images, folders without labels) and
per-class models (``--per-class``) trained, resumed and used end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpixelcnn.classifier import class_log_likelihoods, classify
from cpixelcnn.cli import main
from cpixelcnn.data import load_dataset
from cpixelcnn.ops.dmol import dmol_log_prob
from cpixelcnn.per_class_model import PerClassPixelCNN
from cpixelcnn.rundir import load_run
from cpixelcnn.sampling import sample
from cpixelcnn.training import TrainConfig, train
from cpixelcnn.training.per_class import split_by_counts

from helpers import make_folders

TINY_ARGS = "--data demo --image-size 8 --nr-resnet 1 --nr-filters 6 --nr-mix 2 --batch-size 8".split()
TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, batch_size=8)


def _quiet(*a, **k):
    pass


def _losses(run_dir):
    return [r["train_bpd"] for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if "train_bpd" in r]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpixelcnn: error: "), err
    return err[0]


def _unlabelled_folder(root: Path, n: int = 6, size: int = 8) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


# -- unconditional models ----------------------------------------------------------------------------


def test_unconditional_training_ignores_labels_and_every_command_works_on_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--unconditional", "--max-steps", "2", "--val-split", "16", *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert "unconditional model (--unconditional" in out
    model, config = load_run(run)
    assert model.num_classes == 0 and config["class_names"] == [] and config["train"]["unconditional"] is True
    best = json.loads((run / "best" / "config.json").read_text())["best"]
    assert best["keep_best"] == "bpd" and best["val_accuracy"] is None and best["val_bpd"] > 0
    assert main(["sample", "--checkpoint", str(run), "--n", "3", "--out", str(tmp_path / "s.png"), "--image-size", "4"]) == 0
    assert "3 samples" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--json", "--heatmap", str(tmp_path / "h.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpd"] > 0 and result["accuracy"] is None and Path(result["heatmap"]).is_file()
    assert main(["complete", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--n", "2", "--rows", "6", "--samples", "2",
                 "--out", str(tmp_path / "c.png")]) == 0  # fmt: skip
    assert "2 samples" in capsys.readouterr().out
    assert main(["score", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 100
    assert main(["classify", "--checkpoint", str(run), "--data", "demo", "--split", "test"]) == 2
    assert "unconditional model: it cannot classify" in _error_line(capsys)


def test_a_conditional_model_scores_against_an_unconditional_background(tmp_path, capsys):
    conditional, background = tmp_path / "cond", tmp_path / "background"
    for run, extra in ((conditional, []), (background, ["--unconditional", "--mutation-rate", "0.2"])):
        assert main(["train", "--out", str(run), "--max-steps", "1", "--val-data", "none", *TINY_ARGS, *extra]) == 0
    capsys.readouterr()
    assert main(["score", "--checkpoint", str(conditional), "--background", str(background), "--data", "demo", "--split", "test", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 100 and all("llr" in r or "llr_bpd" in r or any("background" in k for k in r) for r in rows[:1])


def test_an_unconditional_run_resumes_exactly(tmp_path):
    kw = dict(TINY, unconditional=True, dropout=0.3, ema=0.9, val_data="none", log_every=1)
    train(TrainConfig(out=str(tmp_path / "straight"), max_steps=6, **kw), log=_quiet)
    train(TrainConfig(out=str(tmp_path / "resumed"), max_steps=3, **kw), log=_quiet)
    train(TrainConfig(out=str(tmp_path / "resumed"), max_steps=6, resume=True, **kw), log=_quiet)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")
    with pytest.raises(ValueError, match="--unconditional False .*cannot change on --resume"):
        train(TrainConfig(out=str(tmp_path / "resumed"), max_steps=7, resume=True, **dict(kw, unconditional=False)), log=_quiet,
              asked={"unconditional"})  # fmt: skip


def test_import_replaces_an_unconditional_run_whole(tmp_path, capsys):
    from cpixelcnn.pixelcnnpp_port import port_state_dict_shapes

    run = tmp_path / "run"
    train(TrainConfig(out=str(run), unconditional=True, max_steps=2, ema=0.9, val_data="none", **TINY), log=_quiet)
    port = tmp_path / "port.pth"
    torch.save({k: torch.randn(shape) + (1.0 if k.endswith("weight_g") else 0.0) for k, shape in port_state_dict_shapes(1, 4, 2, 3).items()}, port)
    assert main(["import", str(port), "--from", "pixelcnnpp", "--out", str(run), "--replace"]) == 0
    model, config = load_run(run)
    assert config["imported_from"] == "pixelcnnpp" and model.num_classes == 0 and not (run / "ema.safetensors").exists()


def test_a_single_class_folder_names_the_flag_and_trains_with_it(tmp_path, capsys):
    folder = make_folders(tmp_path / "one", classes=("cats",), n=8, size=8)
    args = ["--data", str(folder), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "4",
            "--max-steps", "2"]  # fmt: skip
    assert main(["train", "--out", str(tmp_path / "refused"), *args]) == 2
    assert "--unconditional" in _error_line(capsys) and not (tmp_path / "refused").exists()
    assert main(["train", "--out", str(tmp_path / "run"), "--unconditional", *args]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "s.png"), "--image-size", "3"]) == 0


def test_a_folder_of_images_without_classes_trains_an_unconditional_model(tmp_path, capsys):
    folder = _unlabelled_folder(tmp_path / "pictures")
    data = load_dataset(str(folder), "train", 8, 3)
    assert not data.has_labels and data.class_names == [] and data.layout == "images" and len(data) == 6
    args = ["--data", str(folder), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "3"]
    assert main(["train", "--out", str(tmp_path / "run"), "--max-steps", "2", *args]) == 0
    assert f"unconditional model ({folder} has no class labels" in capsys.readouterr().out
    assert load_run(tmp_path / "run")[0].num_classes == 0
    assert main(["train", "--out", str(tmp_path / "run"), "--max-steps", "3", "--resume", *args]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "per"), "--per-class", "--max-steps", "2", *args]) == 2
    assert "images without labels" in _error_line(capsys)


def test_a_conditional_run_does_not_resume_on_images_without_labels(tmp_path, capsys):
    import shutil

    folder = make_folders(tmp_path / "data", n=4, size=8)
    args = ["--data", str(folder), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "4"]
    assert main(["train", "--out", str(tmp_path / "run"), "--max-steps", "1", *args]) == 0
    for image in folder.glob("*/*.png"):  # the same folder, its images now without class folders
        shutil.move(image, folder / f"{image.parent.name}-{image.name}")
    for sub in ("cats", "dogs"):
        (folder / sub).rmdir()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "run"), "--max-steps", "2", "--resume", *args]) == 2
    assert "has images without labels; this run's model is class-conditional" in _error_line(capsys)


@pytest.mark.parametrize(
    "extra,message",
    [
        (dict(unconditional=True, per_class=True), "--per-class and --unconditional ask for different models"),
        (dict(unconditional=True, discriminative=0.5), "--discriminative needs a class-conditional model"),
        (dict(per_class=True, balanced_batches=True), "--balanced-batches needs a class-conditional model"),
        (dict(only_class="disc", keep_best="accuracy"), "--keep-best accuracy needs a class-conditional model"),
        (dict(only_class="nope"), "--only-class nope: demo has no class 'nope'"),
        (dict(per_class=True, batch_size=400), "--batch-size 400 is larger than the 300 training images of class stripes"),
    ],
)
def test_settings_that_need_classes_are_refused_in_one_line(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, val_data="none", **(TINY | extra)), log=_quiet)
    assert not (tmp_path / "run").exists()


def test_one_class_of_a_data_set_trains_on_that_class_only(tmp_path):
    lines = []
    summary = train(TrainConfig(out=str(tmp_path / "run"), only_class="disc", max_steps=1, val_split="20", **TINY), log=lines.append)
    assert "unconditional model of class disc on 296 " in lines[0] and "validating on 4 images" in lines[0]  # of the 20 held out, 4 are discs
    assert summary["best"]["val_accuracy"] is None


# -- the paper's model by name -----------------------------------------------------------------------


def test_the_papers_preset_trains_the_unconditional_model_and_the_conditional_one_has_its_own_name(tmp_path, capsys):
    from cpixelcnn.training.presets import preset_config

    assert preset_config("pixelcnnpp-cifar10", data="d", out="o").unconditional is True
    assert preset_config("pixelcnnpp-cifar10-conditional", data="d", out="o").unconditional is False
    assert preset_config("pixelcnnpp-cifar10", data="d", out="o", per_class=True).per_class is True  # another kind keeps the preset's out
    small = ["--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "8", "--max-steps", "1", "--data", "demo",
             "--val-data", "none"]  # fmt: skip
    assert main(["train", "--preset", "pixelcnnpp-cifar10", "--out", str(tmp_path / "paper"), *small]) == 0
    assert "--unconditional True" in capsys.readouterr().out and load_run(tmp_path / "paper")[0].num_classes == 0


# -- per-class models --------------------------------------------------------------------------------


def test_the_budget_is_split_by_class_size_and_adds_up():
    assert sorted(split_by_counts(10, [1, 1, 1])) == [3, 3, 4]
    assert split_by_counts(100, [300, 100]) == [75, 25]
    assert sum(split_by_counts(7, [5, 9, 2, 11])) == 7


def test_per_class_run_trains_one_model_per_class_and_classifies_by_bayes_with_priors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--per-class", "--max-steps", "8", "--val-split", "40", *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert "per-class run: 4 unconditional models (stripes, checker, disc, diagonal)" in out and "--max-steps 8 split by class size" in out
    assert f"classify with `cpixelcnn classify --checkpoint {run} --data" in out  # the hint is a command that runs
    config = json.loads((run / "config.json").read_text())
    assert config["per_class"]["members"] == ["members/00", "members/01", "members/02", "members/03"]
    counts = config["per_class"]["class_counts"]
    assert sum(counts) == 1200 - 40
    steps = [json.loads((run / m / "config.json").read_text())["step"] for m in config["per_class"]["members"]]
    assert sum(steps) == 8 and steps == split_by_counts(8, counts)
    model, _ = load_run(run)
    assert isinstance(model, PerClassPixelCNN) and model.num_classes == 4
    assert torch.allclose(model.class_log_priors.exp(), torch.tensor(counts, dtype=torch.float64) / sum(counts))

    # the ensemble's prediction is argmax_c log p_c(x) + log π_c, each member asked on its own, in float64
    model = model.double()
    images = load_dataset("demo", "test", 8, 3).images[:24]
    x = images.double() / 127.5 - 1
    by_hand = torch.stack([dmol_log_prob(x, member(x, None), bits=8) for member in model.members], dim=1)
    predicted, loglik = classify(model, images, max_batch=10)
    assert torch.allclose(loglik, by_hand, rtol=0, atol=1e-9)
    assert torch.equal(predicted, (by_hand + model.class_log_priors).argmax(1))
    assert torch.allclose(class_log_likelihoods(model, x), by_hand, rtol=0, atol=1e-9)

    # the commands take the run as they take a conditional one
    assert main(["classify", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 100 and 0 <= report["accuracy"] <= 1 and len(report["confusion_matrix"]) == 4
    assert main(["evaluate", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bpd"] > 0
    assert main(["score", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 100
    assert main(["sample", "--checkpoint", str(run), "--class", "disc", "--n", "2", "--out", str(tmp_path / "s.png"), "--image-size", "4"]) == 0


def test_per_class_samples_are_each_members_own(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), per_class=True, max_steps=4, val_data="none", **TINY), log=_quiet)
    model, _ = load_run(run)
    labels = torch.tensor([2, 0, 2, 1])
    for method in ("naive", "cached"):
        images = sample(model, labels, image_size=(4, 4), method=method, generator=torch.Generator().manual_seed(5))
        for c in (0, 1, 2):
            rows = (labels == c).nonzero()[:, 0]
            alone = sample(model.members[c], None, image_size=(4, 4), method="naive", batch_size=4, generator=torch.Generator().manual_seed(5))
            assert torch.equal(images[rows], alone[rows]), (method, c)  # image b's random numbers do not depend on the others


def test_a_per_class_run_resumes_member_by_member_and_refuses_a_second_start(tmp_path, capsys):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    kw = dict(TINY, per_class=True, val_data="none", dropout=0.3, log_every=1)
    train(TrainConfig(out=str(straight), max_steps=8, **kw), log=_quiet)
    train(TrainConfig(out=str(cut), max_steps=4, **kw), log=_quiet)
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(out=str(cut), max_steps=4, **kw), log=_quiet)
    assert main(["train", "--out", str(cut), "--resume", "--max-steps", "8", *TINY_ARGS]) == 0  # no --per-class: the run says so
    assert "(continuing)" in capsys.readouterr().out
    for member in ("00", "01", "02", "03"):
        assert json.loads((cut / "members" / member / "config.json").read_text())["step"] == 2
        assert _losses(straight / "members" / member) == _losses(cut / "members" / member)  # each member resumed exactly


def test_a_per_class_run_missing_a_member_says_how_to_finish_it(tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    train(TrainConfig(out=str(run), per_class=True, max_steps=4, val_data="none", **TINY), log=_quiet)
    shutil.rmtree(run / "members" / "03")
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(run), "--data", "demo", "--split", "test"]) == 2
    assert "the model of class diagonal (members/03) has not been trained yet" in _error_line(capsys)
