"""Real images from installed packages (digits, textures, micrographs), the conditioning learning
rate and the optional discriminative term."""

import math

import pytest
import torch

from cpixelcnn.cli import main
from cpixelcnn.data import DataError, load_dataset

pytest.importorskip("sklearn")
pytest.importorskip("skimage")


@pytest.mark.parametrize("name,size,channels,classes", [("digits", 8, 1, 10), ("textures", 16, 1, 3), ("micrographs", 16, 3, 3)])
def test_splits_are_balanced_disjoint_and_shaped(name, size, channels, classes):
    splits = {s: load_dataset(name, s, size, channels) for s in ("train", "validation", "test")}
    for ds in splits.values():
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (channels, size, size) and ds.has_labels
        assert len(ds.class_names) == classes and set(ds.labels.tolist()) == set(range(classes))
    if name != "digits":  # one count per class and split; tiles from disjoint bands of each photograph
        assert len(set(splits["train"].labels.bincount().tolist())) == 1
        train = {bytes(t.numpy()) for t in splits["train"].images}
        varied = [t for t in splits["test"].images if t.unique().numel() > 8]  # (blank sky is alike everywhere)
        assert len(varied) > len(splits["test"]) // 2 and not any(bytes(t.numpy()) in train for t in varied)
    else:
        assert sum(len(ds) for ds in splits.values()) == 1797
        assert set(splits["train"].images.unique().tolist()) <= {round(v * 255 / 16) for v in range(17)}


def test_packaged_data_errors_and_colour_conversion():
    assert load_dataset("digits", "train", 16, 1).images.shape[1:] == (1, 16, 16)  # resized only when asked for
    grey = load_dataset("micrographs", "test", 16, 1)
    colour = load_dataset("micrographs", "test", 16, 3)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.equal(grey.images, (colour.images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8))
    with pytest.raises(DataError, match="no 512x512 patches"):
        load_dataset("textures", "test", 512, 1)


def test_train_on_digits_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--data", "digits", "--out", str(run), "--image-size", "8", "--channels", "1", "--nr-resnet", "1", "--nr-filters", "4",
            "--nr-mix", "2", "--batch-size", "8", "--max-steps", "2", "--val-limit", "20", "--cond-lr-scale", "5"]  # fmt: skip
    assert main(argv) == 0
    assert main(["classify", "--checkpoint", str(run / "best"), "--data", "digits", "--split", "test", "--json"]) == 0


def test_conditioning_learning_rate_scales_only_the_conditioning_path():
    from cpixelcnn import ConditionalPixelCNN
    from cpixelcnn.training.objectives import param_groups as _param_groups

    model = ConditionalPixelCNN(nr_resnet=1, nr_filters=4, nr_logistic_mix=2)
    single = _param_groups(model, 1e-3, 1.0)
    assert len(single) == 1 and len(single[0]["params"]) == len(list(model.parameters()))
    base, cond = _param_groups(model, 1e-3, 10.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert cond["lr"] == pytest.approx(1e-2) and base["lr"] == 1e-3
    assert cond["params"] and all(names[id(p)].startswith("class_embedding.") or ".cond_head." in names[id(p)] for p in cond["params"])
    assert len(base["params"]) + len(cond["params"]) == len(list(model.parameters()))


def test_the_discriminative_term_is_the_bayes_cross_entropy():
    from cpixelcnn.classifier import class_log_likelihoods
    from cpixelcnn.ops.dmol import dmol_log_prob
    from cpixelcnn.training.objectives import joint_loss as _joint_loss

    from helpers import tiny_model

    torch.manual_seed(0)
    model = tiny_model(num_classes=3)  # float64, FiLM heads perturbed
    x = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.float64) / 127.5 - 1
    y = torch.tensor([0, 2, 1, 1, 0])
    loglik = class_log_likelihoods(model, x)
    nll = -loglik.gather(1, y[:, None])[:, 0]
    ce = torch.logsumexp(loglik, 1) - loglik.gather(1, y[:, None])[:, 0]
    assert _joint_loss(model, model, x, y, 0.0, "eager").item() == pytest.approx(nll.mean().item(), rel=1e-6)
    assert _joint_loss(model, model, x, y, 0.7, "eager").item() == pytest.approx((nll + 0.7 * ce).mean().item(), rel=1e-6)
    assert math.isclose(-dmol_log_prob(x, model(x, y)).mean().item(), nll.mean().item(), rel_tol=1e-9)


@pytest.mark.parametrize("option,value,message", [("--cond-lr-scale", "0", "--cond-lr-scale must be a positive number"),
                                                  ("--discriminative", "-1", "--discriminative must be a number >= 0")])  # fmt: skip
def test_bad_objective_options(option, value, message, tmp_path, capsys):
    assert main(["train", "--data", "demo", "--out", str(tmp_path / "r"), option, value, "--max-steps", "1"]) == 2
    assert message in capsys.readouterr().err
