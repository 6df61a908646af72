"""--preset: the paper's recipe fills in what the command line leaves out, and says what it set."""

import json

import pytest

from cpixelcnn.cli import build_parser, main
from cpixelcnn.training.config import TrainConfig, from_arguments
from cpixelcnn.training.presets import preset_config


def test_the_cifar10_preset_is_the_papers_recipe():
    cfg = preset_config("pixelcnnpp-cifar10", data="cifar10:x", out="run")
    assert (cfg.nr_resnet, cfg.nr_filters, cfg.nr_logistic_mix, cfg.dropout) == (5, 160, 10, 0.5)
    assert (cfg.lr, cfg.lr_decay, cfg.batch_size, cfg.ema, cfg.image_size, cfg.in_channels) == (1e-3, 0.999995, 128, 0.9995, 32, 3)
    assert preset_config("pixelcnnpp-cifar10", data="d", out="o", batch_size=64).batch_size == 64  # an explicit setting wins


def test_the_command_line_overrides_the_preset_and_the_run_records_the_result(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "pixelcnnpp-cifar10", "--data", "demo", "--out", str(run), "--image-size", "8", "--nr-resnet", "1",
            "--nr-filters", "6", "--nr-mix", "2", "--batch-size", "8", "--max-steps", "1"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out.splitlines()[0]
    assert said.startswith("preset pixelcnnpp-cifar10 (") and "--dropout 0.5" in said and "--lr-decay 0.999995" in said and "--ema 0.9995" in said
    assert "--nr-resnet 5" not in said and "kept from the command line: --nr-resnet --nr-filters --nr-mix --batch-size --image-size" in said
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["nr_resnet"] == 1 and saved["model"]["dropout"] == 0.5 and saved["train"]["lr_decay"] == 0.999995


def test_without_a_preset_nothing_changes():
    args = build_parser().parse_args(["train", "--data", "demo", "--out", "o"])
    assert from_arguments(args) == TrainConfig(data="demo", out="o")


def test_an_unknown_preset_is_refused():
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--preset", "nope", "--data", "demo", "--out", "o"])
    assert exit_.value.code == 2
