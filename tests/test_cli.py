"""End-to-end CLI runs in a temp dir: train, resume, sample, classify, evaluate, and their errors."""

import json
import subprocess
import sys

import pytest

from cpixelcnn.cli import main

from helpers import make_course_layout

TRAIN = ["--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2", "--batch-size", "8", "--log-every", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", "demo", "--out", str(out), "--max-steps", "3", "--sample-every", "1", "--epochs", "1", *TRAIN]) == 0
    return out


def test_train_writes_a_complete_run_directory(run_dir):
    for name in ("config.json", "checkpoint.safetensors", "training_state.pt", "metrics.jsonl", "curve.png"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["class_names"] == ["stripes", "checker", "disc", "diagonal"]
    assert config["model"]["nr_filters"] == 6 and config["step"] == 3
    assert not list(run_dir.glob(".*.tmp"))


def test_resume_from_the_cli(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--data", "demo", "--out", str(copy), "--max-steps", "5", "--resume", *TRAIN]) == 0
    assert json.loads((copy / "config.json").read_text())["step"] == 5


def test_sample(run_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(run_dir), "--class", "disc", "--n", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "2 samples" in capsys.readouterr().out


def test_complete_writes_original_kept_and_one_completion_per_class(run_dir, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    out = tmp_path / "complete.png"
    assert (
        main(
            [
                "complete",
                "--checkpoint",
                str(run_dir),
                "--data",
                "demo",
                "--split",
                "validation",
                "--rows",
                "3",
                "--n",
                "2",
                "--out",
                str(out),
                "--scale",
                "1",
            ]
        )
        == 0
    )
    assert "2 images, top 3 of 8 rows kept, columns: original | kept | stripes, checker, disc, diagonal" in capsys.readouterr().out
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape == (2 * 10 + 2, 6 * 10 + 2, 3)  # 2 images x (original, kept, 4 classes), 8x8 tiles, 2 px gaps
    tile = lambda r, c: grid[2 + r * 10 : 10 + r * 10, 2 + c * 10 : 10 + c * 10]  # noqa: E731
    for r in range(2):
        for c in range(1, 6):  # the kept rows are the original's in the kept tile and every completion
            assert np.array_equal(tile(r, c)[:3], tile(r, 0)[:3]), (r, c)
        assert not np.array_equal(tile(r, 2)[3:], tile(r, 0)[3:])  # the rest is sampled


def test_classify_and_evaluate_json(run_dir, capsys):
    assert main(["classify", "--checkpoint", str(run_dir), "--data", "demo", "--split", "validation", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 100 and 0 <= result["accuracy"] <= 1 and set(result["per_class_accuracy"]) == {"stripes", "checker", "disc", "diagonal"}
    assert main(["evaluate", "--checkpoint", str(run_dir), "--data", "demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"bpd", "accuracy", "fid"} <= result.keys() and 0 < result["bpd"] < 16


def test_course_layout_end_to_end(tmp_path, capsys):
    data = make_course_layout(tmp_path / "data", size=8)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--max-steps", "2", *TRAIN]) == 0
    assert (
        main(["classify", "--checkpoint", str(run), "--data", str(data), "--split", "test", "--predictions", str(tmp_path / "sub.csv"), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] is None and result["n"] == 4
    rows = (tmp_path / "sub.csv").read_text().split()
    assert len(rows) == 4 and all(r.split(",")[0].endswith(".jpg") and r.split(",")[1] in "0123" for r in rows)
    assert main(["classify", "--checkpoint", str(run), "--data", str(data), "--split", "validation"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sample", "--checkpoint", "RUN", "--class", "zebra", "--out", "x.png"], "--class 'zebra' is not a class"),
        (["sample", "--checkpoint", "/no/such/run", "--out", "x.png"], "is not a cpixelcnn run directory"),
        (["classify", "--checkpoint", "RUN", "--data", "/no/such/data"], "does not exist"),
        (["train", "--data", "demo", "--out", "RUN", "--max-steps", "1"], "already holds a run"),
        (["train", "--data", "demo", "--out", "NEW", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["train", "--data", "demo", "--out", "NEW", "--amp", "fp8"], "invalid choice"),
        (["evaluate", "--checkpoint", "RUN", "--data", "demo", "--fid-dims", "100"], "invalid choice"),
        (
            ["complete", "--checkpoint", "RUN", "--data", "demo", "--rows", "9", "--out", "x.png"],
            r"--rows must be in [0, 8] (the image height), got 9",
        ),
        (["complete", "--checkpoint", "RUN", "--data", "demo", "--rows", "-1", "--out", "x.png"], r"--rows must be in [0, 8]"),
        (["complete", "--checkpoint", "RUN", "--data", "demo", "--rows", "2", "--n", "0", "--out", "x.png"], "--n must be >= 1 and <= 10000, got 0"),
    ],
)
def test_errors_are_one_line_with_exit_2(run_dir, tmp_path, argv, message):
    argv = [a.replace("RUN", str(run_dir)).replace("NEW", str(tmp_path / "new")) for a in argv]
    argv = [str(tmp_path / a) if a == "x.png" else a for a in argv]
    proc = subprocess.run([sys.executable, "-m", "cpixelcnn", *argv], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cpixelcnn: error:"), proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(run_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    for name in ("checkpoint.safetensors", "ema.safetensors"):  # sample reads the averaged weights when the run has them (the default)
        (bad / name).write_bytes(b"garbage")
    assert main(["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "cannot be read" in capsys.readouterr().err
