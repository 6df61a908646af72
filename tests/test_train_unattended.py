"""Training left alone for a day: validation and RUN/best/, crash-safe checkpoints (kill -9, torn
metrics, unreadable checkpoints, a full disk), the progress line and the training curve."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cpixelcnn import load_run
from cpixelcnn.cli import main
from cpixelcnn.rundir import checkpoint_dirs, save_weights
from cpixelcnn.training import CheckpointWriteFailed, TrainConfig, train

from helpers import loss_that, make_course_layout, make_folders

TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, batch_size=8, log_every=1)
TINY_ARGS = ["--data", "demo", "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2", "--batch-size", "8"]
quiet = dict(log=lambda *a: None)


def _records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a, b):
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stray(run_dir):
    return [p for p in Path(run_dir).rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_validation_records_best_model_progress_and_curve(tmp_path, capsys):
    run = tmp_path / "run"
    # 1200 demo images at batch 32: 37 steps an epoch; validation after epochs 1, 2, 3 on the demo's validation split
    result = train(TrainConfig(out=str(run), epochs=3, ema=0.9, keep_best="bpd", **(TINY | dict(batch_size=32, log_every=5))))
    val = [r for r in _records(run) if "val_bpd" in r]
    assert [(r["step"], r["epoch"]) for r in val] == [(37, 1), (74, 2), (111, 3)]
    assert all(r["val_n"] == 100 and 0 <= r["val_accuracy"] <= 1 and 0 < r["val_bpd"] < 10 for r in val)
    best = min(val, key=lambda r: r["val_bpd"])
    assert [r["best"] for r in val] == [r["val_bpd"] == min(v["val_bpd"] for v in val[: i + 1]) for i, r in enumerate(val)]
    model, config = load_run(run / "best")
    assert config["best"]["step"] == best["step"] == result["best"]["step"] and config["weights"] == "checkpoint.safetensors"
    assert config["best"]["keep_best"] == "bpd" and config["best"]["weights"] == "ema"
    if best["step"] == 111:  # the best is the final model here: its weights are the final Polyak average
        assert _same_weights(run / "best" / "checkpoint.safetensors", run / "ema.safetensors")
    # the validation figures are reproducible from best/ alone (the EMA weights were validated)
    from cpixelcnn.data import load_dataset
    from cpixelcnn.metrics import dataset_bpd

    held_out = load_dataset("demo", "validation", 8)
    assert dataset_bpd(model, held_out.images, held_out.labels, batch_size=32) == pytest.approx(best["val_bpd"], rel=1e-5)
    err = capsys.readouterr().err
    assert "elapsed" in err and " left" in err and f"val bpd {val[1]['val_bpd']:.3f}" in err  # non-tty: printed progress lines
    with Image.open(run / "curve.png") as img:  # matplotlib figure, 7 x 4.2 in at 120 dpi
        assert img.size == (840, 504) and len(np.unique(np.asarray(img.convert("L")))) > 20
    best_dir = str(run / "best")
    assert main(["sample", "--checkpoint", best_dir, "--n", "1", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["classify", "--checkpoint", best_dir, "--data", "demo", "--split", "test"]) == 0
    assert main(["evaluate", "--checkpoint", best_dir, "--data", "demo", "--json"]) == 0


def test_best_by_accuracy_and_validation_on_a_course_layout(tmp_path):
    data = make_course_layout(tmp_path / "data", n_per_split=(16, 12, 4), size=8)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2",
                 "--batch-size", "8", "--epochs", "4", "--val-every", "2", "--val-limit", "10"]) == 0  # fmt: skip
    val = [r for r in _records(run) if "val_bpd" in r]
    assert [r["step"] for r in val] == [4, 8] and all(r["val_n"] == 10 for r in val)  # the --data's validation split, by default
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["val_data"] == str(data) and saved["val_split"] == "validation" and saved["keep_best"] == "accuracy"
    best = max(val, key=lambda r: (r["val_accuracy"], -r["val_bpd"]))
    assert json.loads((run / "best" / "config.json").read_text())["best"]["step"] == best["step"]
    assert main(["classify", "--checkpoint", str(run / "best"), "--data", str(data), "--split", "validation", "--json"]) == 0


def test_validation_off_and_final_validation(tmp_path):
    train(TrainConfig(out=str(tmp_path / "off"), max_steps=3, val_data="none", **TINY), **quiet)
    assert not any("val_bpd" in r for r in _records(tmp_path / "off")) and not (tmp_path / "off" / "best").exists()
    train(TrainConfig(out=str(tmp_path / "short"), max_steps=3, val_limit=7, **TINY), **quiet)  # shorter than an epoch: validated at the end
    assert [(r["step"], r["val_n"]) for r in _records(tmp_path / "short") if "val_bpd" in r] == [(3, 7)]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(val_every=0), "--val-every must be >= 1"),
        (dict(checkpoint_every=0.0), "--checkpoint-every must be a positive number of minutes"),
        (dict(checkpoint_every=-1.0), "--checkpoint-every must be a positive number of minutes"),
        (dict(val_limit=0), "--val-limit must be >= 1"),
    ],
)
def test_bad_validation_and_checkpoint_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, **(TINY | kwargs)), **quiet)


def test_a_validation_split_without_labels(tmp_path):
    data = make_course_layout(tmp_path / "data", n_per_split=(8, 4, 4), size=8)
    with pytest.raises(ValueError, match="the test split of .* has images without labels; validation needs them"):
        train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, **(TINY | dict(data=str(data), val_split="test"))), **quiet)


def test_a_validation_set_with_other_classes_is_one_line(tmp_path, capsys):
    other = make_folders(tmp_path / "other", classes=("cats", "dogs"), n=2, size=8)
    assert main(["train", "--out", str(tmp_path / "run"), "--max-steps", "1", "--val-data", str(other), *TINY_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("cpixelcnn: error: the validation set") and "(cats, dogs) that differ from the training set's" in err[0]
    )


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """A real subprocess killed by SIGKILL between periodic checkpoints (every 0.01 min); --resume
    drops the torn metrics line and the temp files the kill left, and continues exactly."""
    steps = 200
    argv = [*TINY_ARGS, "--max-steps", str(steps), "--dropout", "0.3", "--ema", "0.9", "--log-every", "1", "--val-data", "none"]
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cpixelcnn", "train", "--out", str(run), "--checkpoint-every", "0.01", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(int(p.name[5:]) > 0 for p in checkpoint_dirs(run)):
            time.sleep(0.05)
        time.sleep(0.3)  # past a periodic checkpoint, before the next
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in _records(run) if "step" in r)
    saved_at = int(checkpoint_dirs(run)[0].name[5:])
    assert 0 < saved_at <= killed_at < steps, (saved_at, killed_at)
    with open(run / "metrics.jsonl", "a") as f:  # what a kill in the middle of a write leaves
        f.write('{"step": 99999, "epoch": 0, "train_b')
    (run / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"half a file")
    (run / "checkpoints" / ".step-000099999.xyz.tmp").mkdir()

    resumed = subprocess.run(
        [sys.executable, "-m", "cpixelcnn", "train", "--out", str(run), "--resume", *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = subprocess.run(
        [sys.executable, "-m", "cpixelcnn", "train", "--out", str(tmp_path / "straight"), *argv], capture_output=True, env=env, timeout=300
    )
    assert straight.returncode == 0  # same thread count as the killed run: the same float sums
    assert _same_weights(run / "checkpoint.safetensors", tmp_path / "straight" / "checkpoint.safetensors")
    assert _same_weights(run / "ema.safetensors", tmp_path / "straight" / "ema.safetensors")
    losses = [(r["step"], r["train_bpd"]) for r in _records(run) if "train_bpd" in r]
    assert losses == [(r["step"], r["train_bpd"]) for r in _records(tmp_path / "straight") if "train_bpd" in r]  # nothing torn or doubled
    assert _stray(run) == []


def _train_to(run, steps, **kw):
    train(
        TrainConfig(out=str(run), max_steps=steps, resume=(Path(run) / "config.json").exists(), val_data="none", **(TINY | dict(dropout=0.2) | kw)),
        **quiet,
    )


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    _train_to(tmp_path / "straight", 9)
    run = tmp_path / "run"
    _train_to(run, 3)
    _train_to(run, 6)
    assert [p.name for p in checkpoint_dirs(run)] == ["step-000000006", "step-000000003"]
    weights = run / "checkpoints" / "step-000000006" / "checkpoint.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # torn
    messages = []
    train(TrainConfig(out=str(run), max_steps=9, resume=True, val_data="none", **(TINY | dict(dropout=0.2))), log=messages.append)
    assert any("newest checkpoint unreadable" in m and "resuming from step-000000003" in m for m in messages), messages
    assert (run / "checkpoints" / "unreadable-step-000000006").is_dir()
    assert _same_weights(run / "checkpoint.safetensors", tmp_path / "straight" / "checkpoint.safetensors")
    steps = [r["step"] for r in _records(run) if "train_bpd" in r]
    assert steps == list(range(1, 10))  # the records of the lost steps 4-6 were dropped and redone


def test_no_readable_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    _train_to(run, 2)
    for directory in checkpoint_dirs(run):
        (directory / "training_state.pt").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "4", *TINY_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no readable checkpoint to resume from (step-000000002: ValueError: training_state.pt cannot be read" in err[0], err
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume", *TINY_ARGS]) == 2
    assert "is not a cpixelcnn run directory" in capsys.readouterr().err


def _can_mount_tmpfs(path):
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("disk", ["tmpfs", "simulated"])
def test_a_disk_that_fills_during_a_checkpoint_keeps_the_previous_one(tmp_path, disk):
    """tmpfs: a real 8 MB file system filled by a ballast file mid-run (needs root and mount);
    simulated: every write of the averaged weights fails with ENOSPC after step 10."""
    disk_dir = tmp_path / "disk"
    if disk == "tmpfs" and not _can_mount_tmpfs(disk_dir):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    disk_dir.mkdir(exist_ok=True)
    run = disk_dir / "run"

    def fill_the_disk(call):
        if call == 10 and disk == "tmpfs":  # fill the file system to the last byte
            with open(disk_dir / "ballast", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass

    loss = loss_that(before=fill_the_disk)

    def full(path, state):
        if loss.calls["n"] >= 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return save_weights(path, state)

    hooks = dict(loss=loss, save_weights=full) if disk == "simulated" else dict(loss=loss)
    cfg = TrainConfig(out=str(run), max_steps=40, checkpoint_every=0.0001, ema=0.9, val_data="none", **(TINY | dict(log_every=10)))
    try:
        with pytest.raises(CheckpointWriteFailed) as failure:
            train(cfg, **quiet, **hooks)
        message = str(failure.value)
        assert "\n" not in message and "No space left on device" in message and "is intact" in message, message
        newest = checkpoint_dirs(run)[0]
        assert 0 < int(newest.name[5:]) < 10 and _stray(run) == []
        for directory in checkpoint_dirs(run) + [run]:
            for use_ema in (False, True):
                model, _ = load_run(directory, use_ema=use_ema)
                assert all(torch.isfinite(t).all() for t in model.state_dict().values())
        (disk_dir / "ballast").unlink(missing_ok=True)
        assert main(["train", "--out", str(run), "--resume", "--max-steps", "12", *TINY_ARGS]) == 0  # space again: it goes on
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", str(disk_dir)], capture_output=True)
