"""Validation that fits the data: Bayes accuracy (a forward pass per class and image) only where it is
affordable or asked for, its cost said with the plan; and every long loop over images — validation,
classify, evaluate, score — stopped within seconds by SIGTERM / SIGUSR1 with the preemption status."""

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cpixelcnn.cli import main
from cpixelcnn.stopping import REQUEUE_STATUS
from cpixelcnn.training import TrainConfig, train
from cpixelcnn.training.validation import ACCURACY_CLASSES, accuracy_classes, validation_set

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CPIXELCNN_DATA_CACHE="off")


def _many_classes(root, classes=40, n=3, size=4):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c:03d}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{c:03d}" / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "value, keep_best, classes, expected",
    [("auto", None, 4, 4), ("auto", None, ACCURACY_CLASSES, ACCURACY_CLASSES), ("auto", None, 1000, 0), ("auto", "accuracy", 1000, 1000),
     ("on", None, 1000, 1000), ("off", None, 4, 0), ("10", None, 1000, 10), ("10", None, 4, 4), ("auto", None, 0, 0)],
)  # fmt: skip
def test_accuracy_is_measured_where_it_is_affordable_or_asked_for(value, keep_best, classes, expected):
    assert accuracy_classes(SimpleNamespace(val_accuracy=value, keep_best=keep_best), classes) == expected


def test_bad_val_accuracy_values_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="--val-accuracy must be auto, on, off or a number of classes >= 2, got 'some'"):
        train(TrainConfig(data="demo", out=str(tmp_path / "r"), val_accuracy="some"))
    with pytest.raises(ValueError, match="--keep-best accuracy needs the accuracy that --val-accuracy off turns off"):
        train(TrainConfig(data="demo", out=str(tmp_path / "r"), val_accuracy="off", keep_best="accuracy"))


def test_n_way_accuracy_validates_on_the_images_of_n_classes(tmp_path):
    root = _many_classes(tmp_path / "data")
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), image_size=4, in_channels=3, val_split="60", val_accuracy="5", seed=3, device="cpu")
    names = sorted(p.name for p in root.iterdir())
    val = validation_set(str(root), cfg, names)
    assert len(val) == 60 and len(val.accuracy_classes) == 5
    assert set(val.accuracy_images.labels.tolist()) <= set(val.accuracy_classes) and len(val.accuracy_images) > 0
    assert val.passes == 60 + 5 * len(val.accuracy_images)
    assert "5-way Bayes accuracy among 5 of the 40 classes" in val.describe()


def test_the_start_line_says_what_validation_measures_and_costs(tmp_path, capsys):
    root = _many_classes(tmp_path / "data")
    common = ["--data", str(root), "--image-size", "4", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "8",
              "--max-steps", "2", "--device", "cpu", "--no-cache", "--val-split", "40"]  # fmt: skip
    assert main(["train", "--out", str(tmp_path / "a"), *common]) == 0
    out = capsys.readouterr().out
    assert "bits/dim, 40 forward passes (Bayes accuracy over 40 classes would take 1,640 passes" in out and "best by bpd" in out
    history = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] for r in history if "val_bpd" in r] == [None]
    assert main(["train", "--out", str(tmp_path / "b"), *common, "--val-accuracy", "on"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim and 40-way Bayes accuracy, 1,640 forward passes" in out and "best by accuracy" in out


_SLOW_LIKELIHOOD = """
import sys, time
import cpixelcnn.likelihood as lk
real_log_prob = lk.dmol_log_prob
def slow_log_prob(*args, **kwargs):
    if not slow_log_prob.said:
        print("looping over images", flush=True)
        slow_log_prob.said = True
    time.sleep(0.2)
    return real_log_prob(*args, **kwargs)
slow_log_prob.said = False
lk.dmol_log_prob = slow_log_prob  # the likelihood loop's batches (validation, classify, evaluate, score), not training's loss
from cpixelcnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _stop_when(proc, line: str, timeout: float = 120) -> tuple[float, str]:
    start = time.monotonic()
    for got in proc.stdout:
        if got.strip() == line:
            break
        assert time.monotonic() - start < timeout, f"no {line!r} after {timeout} s"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - sent, err


def test_sigterm_during_validation_of_a_many_class_model_stops_within_seconds_and_resume_validates_first(tmp_path):
    root = _many_classes(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--out", str(run), "--image-size", "4", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2",
            "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--val-split", "40", "--val-accuracy", "on"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_LIKELIHOOD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        took, err = _stop_when(proc, "looping over images")
    finally:
        proc.kill()
    assert proc.returncode == REQUEUE_STATUS and took < 10, err[-2000:]
    saved = json.loads((run / "config.json").read_text())
    assert "stopped by SIGTERM at step" in err and saved["step"] == 10  # 80 training images, batch 8: the first epoch's end
    assert not any("val_bpd" in line for line in (run / "metrics.jsonl").read_text().splitlines())
    assert main([*args, "--resume", "auto", "--no-cache"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_bpd" in r] == [10, 20]  # the interrupted validation first, then the second epoch's


@pytest.mark.parametrize("command", ["classify", "evaluate", "score"])
def test_sigterm_stops_classify_evaluate_and_score_between_batches(tmp_path, command):
    root = _many_classes(tmp_path / "data", classes=8, n=20)
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(run), "--image-size", "4", "--nr-resnet", "1", "--nr-filters", "4",
                 "--nr-mix", "2", "--batch-size", "8", "--max-steps", "1", "--device", "cpu", "--val-data", "none", "--no-cache"]) == 0  # fmt: skip
    argv = [command, "--checkpoint", str(run), "--data", str(root), "--split", "train", "--batch-size", "2"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_LIKELIHOOD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        took, err = _stop_when(proc, "looping over images")
    finally:
        proc.kill()
    assert proc.returncode == REQUEUE_STATUS and took < 10, err[-2000:]
    assert f"cpixelcnn: {command} stopped by SIGTERM between two batches" in err
    assert not list(run.glob("predictions_*.csv"))
