"""Training: exact resume, Ctrl-C checkpoints, data parallel equals single process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cpixelcnn.train as train_module
from cpixelcnn.train import TrainConfig, TrainingInterrupted, train

TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, batch_size=8, log_every=1)


def _losses(run_dir):
    return [r["train_bpd"] for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if "train_bpd" in r]


def _weights(run_dir):
    return load_file(str(Path(run_dir) / "checkpoint.safetensors"))


def test_resume_continues_to_the_same_result(tmp_path):
    kw = dict(TINY, dropout=0.3, augment=True, ema=0.9)
    train(TrainConfig(out=str(tmp_path / "straight"), max_steps=8, **kw), log=lambda *a: None)
    train(TrainConfig(out=str(tmp_path / "resumed"), max_steps=3, **kw), log=lambda *a: None)
    train(TrainConfig(out=str(tmp_path / "resumed"), max_steps=8, resume=True, **kw), log=lambda *a: None)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ema_a = load_file(str(tmp_path / "straight" / "ema.safetensors"))
    ema_b = load_file(str(tmp_path / "resumed" / "ema.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_ema_weights_are_the_polyak_average_and_preferred_for_use(tmp_path):
    from cpixelcnn import load_run

    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=4, ema=0.5, **TINY), log=lambda *a: None)
    raw, ema = _weights(run), load_file(str(run / "ema.safetensors"))
    key = "nin_out.conv.bias"
    assert not torch.equal(raw[key], ema[key])
    model, config = load_run(run)
    assert config["weights"] == "ema.safetensors" and torch.equal(model.nin_out.conv.bias.detach(), ema[key])
    model, config = load_run(run, use_ema=False)
    assert config["weights"] == "checkpoint.safetensors" and torch.equal(model.nin_out.conv.bias.detach(), raw[key])


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    kw = dict(TINY, dropout=0.3)
    train(TrainConfig(out=str(tmp_path / "straight"), max_steps=6, **kw), log=lambda *a: None)
    calls = {"n": 0}
    real = train_module.dmol_log_prob

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "dmol_log_prob", interrupting)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3"):
        train(TrainConfig(out=str(tmp_path / "cut"), max_steps=6, **kw), log=lambda *a: None)
    monkeypatch.setattr(train_module, "dmol_log_prob", real)
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["step"] == 3
    train(TrainConfig(out=str(tmp_path / "cut"), max_steps=6, resume=True, **kw), log=lambda *a: None)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "cut")


def test_refuses_to_overwrite_a_run(tmp_path):
    train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, **TINY), log=lambda *a: None)
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, **TINY), log=lambda *a: None)


def test_two_process_data_parallel_equals_single_process(tmp_path):
    """torchrun + gloo on CPU, global batch 8 = 2 × 4: the same weights as one process with batch 8."""
    common = ["--data", "demo", "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2", "--dropout", "0", "--batch-size", "8", "--max-steps", "3", "--device", "cpu", "--log-every", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "cpixelcnn", "train", "--out", str(tmp_path / "ddp"), *common],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "cpixelcnn", "train", "--out", str(tmp_path / "single"), *common], capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    la, lb = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert len(la) == len(lb) == 3
    assert la == pytest.approx(lb, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0), "--batch-size must be >= 1"),
        (dict(max_steps=0), "--max-steps must be >= 1"),
        (dict(lr=-1.0), "--lr must be a positive"),
        (dict(amp="fp8"), "--amp"),
        (dict(batch_size=5000), "larger than the"),
        (dict(data="/no/such/folder"), "does not exist"),
        (dict(conditioning="concat"), "conditioning must be one of"),
        (dict(ema=1.0), "--ema must be in"),
    ],
)
def test_bad_training_configs(tmp_path, kwargs, message):
    cfg = dict(TINY, max_steps=1)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(out=str(tmp_path / "run"), **cfg), log=lambda *a: None)
