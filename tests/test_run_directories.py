"""Run directories are owned and locked: nothing of the user's is deleted or overwritten, one
writer per run, resume tells a corrupt checkpoint from trouble around it, writes are durable."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cpixelcnn import load_run
from cpixelcnn.atomic_io import atomic_write_bytes
from cpixelcnn.cli import main
from cpixelcnn.rundir import LOCK_NAME, MARKER_NAME, RunLock, checkpoint_dirs, is_run
from cpixelcnn.training import TrainConfig, train

TINY_ARGS = "--data demo --image-size 8 --nr-resnet 1 --nr-filters 6 --nr-mix 2 --batch-size 8 --val-data none".split()
TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, batch_size=8, val_data="none")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_train_refuses_a_foreign_directory_and_changes_nothing(tmp_path, capsys):
    foreign = tmp_path / "thesis"
    (foreign / "best").mkdir(parents=True)
    (foreign / "best" / "notes.txt").write_text("mine")
    (foreign / "metrics.jsonl").write_text('{"mine": 1}\n')
    (foreign / ".draft.tmp").write_text("keep me")
    before = _snapshot(foreign)
    for extra in ([], ["--resume"]):
        assert main(["train", "--out", str(foreign), "--max-steps", "1", *TINY_ARGS, *extra]) == 2
        assert "is not a cpixelcnn run directory" in _one_error_line(capsys)
        assert _snapshot(foreign) == before


def test_a_new_run_is_marked_and_resumable(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=2, **TINY), log=lambda *a: None)
    marker = json.loads((run / MARKER_NAME).read_text())
    assert marker["format"] == "cpixelcnn-run" and marker["kind"] == "run" and marker["created_by"] == "train" and is_run(run)
    train(TrainConfig(out=str(run), max_steps=3, resume=True, **TINY), log=lambda *a: None)
    assert load_run(run)[1]["step"] == 3


def test_a_run_written_before_the_marker_is_still_ours(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=1, **TINY), log=lambda *a: None)
    (run / MARKER_NAME).unlink()
    train(TrainConfig(out=str(run), max_steps=2, resume=True, **TINY), log=lambda *a: None)
    assert (run / MARKER_NAME).is_file()


def test_a_locked_run_refuses_a_second_writer(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=1, **TINY), log=lambda *a: None)
    with RunLock(run):
        before = _snapshot(run)
        capsys.readouterr()
        assert main(["train", "--out", str(run), "--resume", "--max-steps", "2", *TINY_ARGS]) == 2
        line = _one_error_line(capsys)
        assert "is being written by another process" in line and f"pid {os.getpid()}" in line
        assert _snapshot(run) == before
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "2", *TINY_ARGS]) == 0  # released


@pytest.mark.slow
def test_two_processes_one_writer(tmp_path):
    """A live trainer holds the lock; a second one is refused; the first finishes with a loadable checkpoint."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "cpixelcnn", "train", "--out", str(run), *TINY_ARGS, "--max-steps", "150"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "config.json").is_file() and time.monotonic() < deadline:  # the first checkpoint (step 0) is written under the lock
        time.sleep(0.1)
    assert first.poll() is None, first.stderr.read()
    second = subprocess.run([*args[:6], *TINY_ARGS, "--resume", "--max-steps", "200"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert "is being written by another process (pid " in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0, first.stderr.read()
    model, config = load_run(run)
    assert config["step"] == 150


def test_demo_refuses_a_foreign_folder_and_replaces_only_its_own_run(tmp_path, capsys):
    foreign = tmp_path / "photos"
    (foreign / "run").mkdir(parents=True)
    (foreign / "run" / "config.json").write_text('{"mine": true}')
    before = _snapshot(foreign)
    assert main(["demo", "--out", str(foreign), "--data", "demo", "--max-steps", "2"]) == 2
    assert "is not a cpixelcnn demo folder" in _one_error_line(capsys) and _snapshot(foreign) == before


def test_import_refuses_an_existing_run_then_replaces_it_whole(tmp_path, capsys):
    from cpixelcnn.pixelcnnpp_port import port_state_dict_shapes

    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=2, ema=0.9, **TINY), log=lambda *a: None)
    assert (run / "ema.safetensors").is_file() and checkpoint_dirs(run)
    port = tmp_path / "port.pth"
    capsys.readouterr()
    torch.save({k: torch.randn(shape) + (1.0 if k.endswith("weight_g") else 0.0) for k, shape in port_state_dict_shapes(1, 4, 2, 3).items()}, port)
    assert main(["import", str(port), "--from", "pixelcnnpp", "--out", str(run)]) == 2
    assert "--replace" in _one_error_line(capsys)
    assert main(["import", str(port), "--from", "pixelcnnpp", "--out", str(run), "--replace"]) == 0
    names = {p.name for p in run.iterdir()}
    assert names == {"config.json", "checkpoint.safetensors", MARKER_NAME}, names  # no stale EMA, state or checkpoints
    assert load_run(run)[1]["imported_from"] == "pixelcnnpp"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_sets_aside_only_corrupt_checkpoints(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=2, **TINY), log=lambda *a: None)
    newest = checkpoint_dirs(run)[0]
    real_load = torch.load

    def busy(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(torch, "load", busy)
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3", *TINY_ARGS]) == 2
    line = _one_error_line(capsys)
    assert "nothing was changed" in line and "PermissionError" in line
    assert _snapshot(run) == before and newest.is_dir()
    monkeypatch.setattr(torch, "load", real_load)

    # a corrupt newest checkpoint is set aside, even when an earlier set-aside has its name
    (run / "checkpoints" / f"unreadable-{newest.name}").mkdir()
    (newest / "training_state.pt").write_bytes(b"garbage")
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3", *TINY_ARGS]) == 0
    assert (run / "checkpoints" / f"unreadable-{newest.name}.2").is_dir()
    assert load_run(run)[1]["step"] == 3


def test_writes_are_durable_and_leave_the_umask_alone(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("the process umask must not be changed"))
    path = atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert path.read_bytes() == b"data" and len(synced) >= 2  # the file, then its directory
    mask = int(Path("/proc/self/status").read_text().split("Umask:")[1].split()[0], 8) if Path("/proc/self/status").is_file() else 0o022
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_lock_file_is_released_when_the_holder_dies(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", f"from cpixelcnn.rundir import RunLock; import time; RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match="being written by another process"):
        RunLock(run).acquire()
    holder.kill()  # kill -9: the OS drops the lock
    holder.wait()
    RunLock(run).acquire().release()
    assert (run / LOCK_NAME).is_file()


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 2
    assert "does not exist" in _one_error_line(capsys) and not (tmp_path / "run").exists()
