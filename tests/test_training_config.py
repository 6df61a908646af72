"""Each training setting is declared once (cpixelcnn/training/config.py): the command line is
generated from it, and the CLI and the API check it alike."""

import dataclasses

import pytest

from cpixelcnn.cli import build_parser, main
from cpixelcnn.training.config import ModelConfig, TrainConfig, check, fixed_on_resume, flag_of, from_arguments, merged_with_saved


def test_the_command_line_is_the_dataclass():
    args = build_parser().parse_args(["train", "--data", "demo", "--out", "run"])
    assert from_arguments(args) == TrainConfig(data="demo", out="run")  # every default comes from the dataclass
    flags = [flag_of(f) for f in dataclasses.fields(TrainConfig)]
    assert len(flags) == len(set(flags))  # one option per setting


def test_every_option_sets_its_field():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = dict(nr_resnet=2, nr_logistic_mix=3, in_channels=1, max_seconds=5.0, lr_decay=0.99, embedding="learned", augment=True, keep_best="bpd")
    argv = ["train", "--data", "demo", "--out", "run"]
    for name, value in values.items():
        argv += [flag_of(fields[name])] if value is True else [flag_of(fields[name]), str(value)]
    cfg = from_arguments(build_parser().parse_args(argv))
    assert {name: getattr(cfg, name) for name in values} == values


BAD = [
    ("nr_logistic_mix", 0, "--nr-mix must be >= 1"),
    ("max_seconds", -1.0, "--max-time must be a positive number of seconds"),
    ("dropout", 1.0, r"--dropout must be in \[0, 1\)"),
    ("lr_decay", 0.0, "--lr-decay must be a positive number"),
    ("weight_decay", -1.0, "--weight-decay must be a number >= 0"),
    ("fusion", "sideways", "--fusion must be one of"),
]


@pytest.mark.parametrize("name,value,message", BAD)
def test_the_cli_and_the_api_refuse_alike(name, value, message, tmp_path, capsys):
    with pytest.raises(ValueError, match=message):
        check(TrainConfig(data="demo", out=str(tmp_path / "api"), **{name: value}))
    flag = flag_of(next(f for f in dataclasses.fields(TrainConfig) if f.name == name))
    try:
        code = main(["train", "--data", "demo", "--out", str(tmp_path / "cli"), flag, str(value)])
    except SystemExit as refused:  # choices are argparse's to refuse (one line, exit 2)
        code = refused.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message.replace("\\", "").split(" must")[0] in err[0], err
    assert not (tmp_path / "cli").exists() and not (tmp_path / "api").exists()


def test_merging_with_a_saved_run_returns_a_new_checked_config():
    cfg = TrainConfig(data="demo", out="run", lr=5e-3, nr_resnet=2, epochs=3, resume=True)
    saved = dataclasses.asdict(TrainConfig(data="digits", out="old", lr=1e-3, epochs=1, image_size=8))
    model = dataclasses.asdict(ModelConfig(nr_resnet=1, in_channels=1)) | {"num_classes": 10, "bits": 8}
    with pytest.raises(
        ValueError, match=r"--data demo \(run: digits\), --lr 0.005 \(run: 0.001\), --nr-resnet 2 \(run: 1\): these settings cannot change"
    ):
        merged_with_saved(cfg, saved, model)  # passed to TrainConfig and different: refused
    merged = merged_with_saved(cfg, saved, model, asked={"epochs", "out"})  # the caller wrote only these: the rest is the run's
    assert merged is not cfg and cfg.lr == 5e-3 and cfg.data == "demo"
    assert (merged.data, merged.lr, merged.image_size, merged.nr_resnet, merged.in_channels) == ("digits", 1e-3, 8, 1, 1)
    assert merged.epochs == 3 and merged.out == "run"  # not fixed: this run's
    same = merged_with_saved(TrainConfig(data="digits", out="run", lr=1e-3, nr_resnet=1, resume=True), saved, model)  # asked, as the run has them
    assert (same.image_size, same.in_channels) == (8, 1)
    with pytest.raises(ValueError, match=r"--lr 0.001 \(run: 0.005\)"):  # a default written out is asked for, as on the command line
        merged_with_saved(TrainConfig(data="digits", out="run", lr=1e-3, resume=True), dataclasses.asdict(TrainConfig(data="digits", out="o", lr=5e-3)),
                          model)  # fmt: skip
    assert {"data", "lr", "seed", "batch_size"} <= set(fixed_on_resume()) and "epochs" not in fixed_on_resume()
