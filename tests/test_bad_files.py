"""Every malformed file or flag ends in one line and exit 2, never a traceback, and changes no file
that existed before the command. Fixed cases for what was found, then generated ones (hypothesis)."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cpixelcnn.cli import main
from cpixelcnn.training import TrainConfig, train

TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, batch_size=8, val_data="none")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad-files") / "run"
    train(TrainConfig(out=str(run), max_steps=1, **TINY), log=lambda *a: None)
    return run


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fails_in_one_line(argv, capsys, folder: Path) -> str:
    before = _snapshot(folder)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as refused:  # an option outside its own type's bounds: argparse's one line
        code = refused.code
    assert code == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpixelcnn: error: ") and "Traceback" not in out.err, out.err
    assert _snapshot(folder) == before
    return lines[0]


def _run_with_config(good_run: Path, tmp_path: Path, mutate) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(good_run, run)
    config = json.loads((run / "config.json").read_text())
    mutated = mutate(config)
    (run / "config.json").write_text(mutated if isinstance(mutated, str) else json.dumps(mutated))
    return run


@pytest.mark.parametrize("mutate,message", [
    (lambda c: {k: v for k, v in c.items() if k != "class_names"}, "'class_names' must be a list"),
    (lambda c: c | {"train": None}, "'train' must be an object"),
    (lambda c: c | {"class_names": ["a"]}, "1 class names for a model with 4 classes"),
    (lambda c: c | {"model": c["model"] | {"nr_filters": 20000}}, "model setting nr_filters must be >= 1 and <= 2048, got 20000"),
    (lambda c: c | {"model": c["model"] | {"num_classes": 2_000_000_000}}, "model setting num_classes must be >= 0 and <= 10000"),
    (lambda c: c | {"model": c["model"] | {"nr_resnet": 64, "nr_filters": 2048}}, "parameters, more than"),
    (lambda c: c | {"model": c["model"] | {"film_hidden": 10**9}}, "model setting film_hidden must be >= 1 and <= 4096"),
    (lambda c: c | {"model": c["model"] | {"nr_filters": 5}}, "does not fit the config: "),
    (lambda c: c | {"model": c["model"] | {"surprise": 1}}, "unknown model setting 'surprise'"),
    (lambda c: c | {"model": c["model"] | {"nr_resnet": 2.5}}, "model setting nr_resnet must be a whole number, got 2.5"),
    (lambda c: c | {"model": c["model"] | {"weight_norm": "yes"}}, "model setting weight_norm must be true or false"),
    (lambda c: c | {"model": c["model"] | {"fusion": "sideways"}}, "model setting fusion must be one of"),
    (lambda c: "{not json", "is not valid JSON"),
    (lambda c: "[1, 2]", "expected a JSON object"),
])  # fmt: skip
def test_bad_config_json_is_one_line(good_run, tmp_path, capsys, mutate, message):
    run = _run_with_config(good_run, tmp_path, mutate)
    for argv in (["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s.png")], ["classify", "--checkpoint", str(run), "--data", "demo"]):
        assert message in _fails_in_one_line(argv, capsys, tmp_path)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("argv,message", [
    (["classify", "--batch-size", "0"], "--batch-size must be"),
    (["evaluate", "--batch-size", "-3"], "--batch-size must be"),
    (["sample", "--scale", "1000000"], "--scale must be"),
    (["sample", "--image-size", "0"], "--image-size must be"),
    (["sample", "--image-size", "100000"], "--image-size must be"),
    (["sample", "--n", "100000000"], "--n must be"),
])  # fmt: skip
def test_numeric_flags_have_ranges(good_run, tmp_path, capsys, argv, message):
    extra = ["--out", str(tmp_path / "s.png")] if argv[0] == "sample" else ["--data", "demo"]
    assert message in _fails_in_one_line([argv[0], "--checkpoint", str(good_run), *argv[1:], *extra], capsys, tmp_path)


@pytest.mark.parametrize(
    "flag,value", [("--image-size", "1000000"), ("--batch-size", "0"), ("--nr-filters", "100000"), ("--lr", "nan"), ("--epochs", "0")]
)
def test_train_flags_have_ranges(tmp_path, capsys, flag, value):
    line = _fails_in_one_line(["train", "--data", "demo", "--out", str(tmp_path / "run"), flag, value], capsys, tmp_path)
    assert flag in line
    assert not (tmp_path / "run").exists()


def test_resume_refuses_flags_that_differ_from_the_run(good_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(good_run, run)
    line = _fails_in_one_line(["train", "--out", str(run), "--resume", "--data", "demo", "--image-size", "16", "--batch-size", "4"], capsys, tmp_path)
    assert "--image-size" in line and "--batch-size" in line and "cannot change on --resume" in line


# -- generated malformed inputs ----------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)  # fmt: skip
MODEL_KEYS = ["in_channels", "num_classes", "nr_resnet", "nr_filters", "nr_logistic_mix", "conditioning", "fusion", "embedding", "embedding_dim",
              "dropout", "bits", "weight_norm", "film_hidden"]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(MODEL_KEYS + ["class_names", "train", "step", "model"]), value=json_values)
def test_generated_config_json(good_run, tmp_path, capsys, key, value):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))

    def mutate(config):
        if key in ("class_names", "train", "step", "model"):
            return config | {key: value}
        return config | {"model": config["model"] | {key: value}}

    run = _run_with_config(good_run, folder, mutate)
    before = _snapshot(folder)
    capsys.readouterr()
    status = main(["classify", "--checkpoint", str(run), "--data", "demo", "--predictions", str(folder / "p.csv")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status != 0:  # a value that happens to be valid may run; a bad one is one line and changes nothing
        assert status == 2 and len(err.strip().splitlines()) == 1, err
        assert _snapshot(folder) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=6)), min_size=1, max_size=4), data=st.binary(max_size=64))
def test_generated_course_csv_and_image_files(good_run, tmp_path, capsys, rows, data):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    (root / "test").mkdir(parents=True)
    (root / "test.csv").write_text("\n".join(f"{a},{b}" for a, b in rows), encoding="utf-8", errors="surrogateescape")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "test" / "ok.png")
    (root / "test" / "bad.png").write_bytes(data)
    before = _snapshot(root)
    capsys.readouterr()
    status = main(["classify", "--checkpoint", str(good_run), "--data", str(root), "--split", "test", "--predictions", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert "Traceback" not in err and status in (0, 2)
    if status == 2:
        assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(root) == before


def test_port_importer_checks_names_before_shapes():
    import torch

    from cpixelcnn.pixelcnnpp_port import PortImportError, import_pixelcnnpp, port_state_dict_shapes

    state = {k: torch.zeros(s) for k, s in port_state_dict_shapes(1, 4, 2, 3).items()}
    state["up_layers.0.u_stream.100000000.conv_input.conv.weight_v"] = torch.zeros(1)
    with pytest.raises(PortImportError, match="unexpected key 'up_layers.0.u_stream.100000000"):
        import_pixelcnnpp(state)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=st.binary(max_size=256), batch=st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3)))
def test_generated_training_state_and_restored_settings(good_run, tmp_path, capsys, state, batch):
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(good_run, run)
    for folder in [run, *(run / "checkpoints").iterdir()]:
        (folder / "training_state.pt").unlink()
        (folder / "training_state.pt").write_bytes(state)  # the run's files are hard links: write each anew
        config = json.loads((folder / "config.json").read_text())
        config["train"]["batch_size"] = batch
        (folder / "config.json").unlink()
        (folder / "config.json").write_text(json.dumps(config))
    contents = sorted(p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock")  # the lock file names its holder
    capsys.readouterr()
    status = main(["train", "--data", "demo", "--out", str(run), "--resume", "--max-steps", "2"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # a corrupt checkpoint may be set aside (renamed), but no file's bytes change
    assert sorted(p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock") == contents
