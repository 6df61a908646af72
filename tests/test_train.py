"""Training: exact resume, Ctrl-C checkpoints, data parallel equals single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cpixelcnn.training import TrainConfig, TrainingDiverged, TrainingInterrupted, train
from cpixelcnn.training.distributed import Ranks
from cpixelcnn.training.objectives import finite_step

from helpers import loss_that

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


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    kw = dict(TINY, dropout=0.3)
    train(TrainConfig(out=str(tmp_path / "straight"), max_steps=6, **kw), log=lambda *a: None)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3"):
        train(TrainConfig(out=str(tmp_path / "cut"), max_steps=6, **kw), log=lambda *a: None, loss=loss_that(interrupt_at={4}))
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["step"] == 3
    train(TrainConfig(out=str(tmp_path / "cut"), max_steps=6, resume=True, **kw), log=lambda *a: None)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "cut")


def test_cosine_schedule_reaches_zero_at_the_last_step_and_resumes_exactly(tmp_path):
    """--lr-schedule cosine: lr · (1 + cos(π s / S)) / 2 after step s of S, so the last step's
    update is the only one at lr 0 and a run cut by Ctrl-C continues on the same curve."""
    import math

    kw = dict(TINY, dropout=0.3, lr=2e-3, lr_schedule="cosine", max_steps=6)
    train(TrainConfig(out=str(tmp_path / "straight"), **kw), log=lambda *a: None)
    records = [json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert sorted(lrs) == [1, 2, 3, 4, 5, 6]
    for step, lr in lrs.items():
        assert lr == pytest.approx(2e-3 * (1 + math.cos(math.pi * step / 6)) / 2, abs=1e-12)
    assert lrs[6] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TrainingInterrupted):
        train(TrainConfig(out=str(tmp_path / "cut"), **kw), log=lambda *a: None, loss=loss_that(interrupt_at={4}))
    train(TrainConfig(out=str(tmp_path / "cut"), resume=True, **kw), log=lambda *a: None)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "cut")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a resume that raises --max-steps lays the cosine over the new total: the lr rises again to
    # where the longer schedule stands and reaches 0 at its last step
    train(TrainConfig(out=str(tmp_path / "straight"), resume=True, **dict(kw, max_steps=10)), log=lambda *a: None)
    records = [json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert sorted(lrs) == list(range(1, 11))
    for step in range(7, 11):
        assert lrs[step] == pytest.approx(2e-3 * (1 + math.cos(math.pi * step / 10)) / 2, abs=1e-12)
    exponential = TrainConfig(out=str(tmp_path / "exp"), **dict(kw, lr_schedule="exponential", lr_decay=0.5))
    train(exponential, log=lambda *a: None)
    lrs = [json.loads(r)["lr"] for r in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines() if "lr" in r]
    assert lrs == pytest.approx([2e-3 * 0.5**s for s in range(1, 7)])


def test_refuses_to_overwrite_a_run(tmp_path):
    train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, **TINY), log=lambda *a: None)
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, **TINY), log=lambda *a: None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [[], ["--unconditional"]], ids=["conditional", "unconditional"])
def test_two_process_data_parallel_equals_single_process(tmp_path, kind):
    """torchrun + gloo on CPU, global batch 8 = 2 × 4: the same weights as one process with batch 8."""
    common = "--data demo --image-size 8 --nr-resnet 1 --nr-filters 6 --nr-mix 2 --dropout 0 --batch-size 8 --max-steps 3 --device cpu --log-every 1".split()
    common += kind
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "cpixelcnn", "train", "--out", str(tmp_path / "ddp"), *common],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "cpixelcnn", "train", "--out", str(tmp_path / "single"), *common], capture_output=True, text=True, env=env, timeout=300
    )
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


# -- non-finite steps ----------------------------------------------------------------------------


def test_a_non_finite_step_is_skipped_and_touches_nothing(tmp_path):
    kw = dict(TINY, ema=0.9)
    train(TrainConfig(out=str(tmp_path / "run"), max_steps=4, **kw), log=lambda *a: None, loss=loss_that(nan_at={2}))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train_bpd" in r]
    assert [r["step"] for r in steps] == [1, 3, 4] and steps[-1]["skipped_steps"] == 1
    assert all(torch.isfinite(torch.tensor(r["train_bpd"])) for r in steps)
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=False)
    assert state["scheduler"]["last_epoch"] == 3  # the schedule did not advance on the skipped step
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {3}  # nor did Adam
    for name in ("checkpoint.safetensors", "ema.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "run" / name)).values())


def test_too_many_consecutive_non_finite_steps_stop_training(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps up to step 4 .* the last checkpoint \(step 0\)"):
        train(
            TrainConfig(out=str(tmp_path / "run"), max_steps=10, max_skipped=3, **TINY),
            log=lambda *a: None,
            loss=loss_that(nan_at=set(range(2, 100))),
        )


def test_save_refuses_non_finite_weights(tmp_path):
    from cpixelcnn import ConditionalPixelCNN, save_run

    model = ConditionalPixelCNN(nr_resnet=1, nr_filters=4, nr_logistic_mix=2)
    with torch.no_grad():
        model.nin_out.conv.bias[0] = float("inf")
    with pytest.raises(ValueError, match=r"refusing to save checkpoint.safetensors: tensor 'nin_out.conv.bias' has non-finite values"):
        save_run(tmp_path / "run", model)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_divergence_from_the_command_line_is_one_line_and_leaves_loadable_checkpoints(tmp_path):
    from cpixelcnn import load_run

    argv = ["--data", "demo", "--out", str(tmp_path / "run"), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2",
            "--batch-size", "8", "--max-steps", "200", "--lr", "1e6", "--max-skipped", "5", "--ema", "0.9"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "cpixelcnn", "train", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("cpixelcnn: error:")]
    assert len(error) == 1 and "training diverged: 5 consecutive steps" in error[0], proc.stderr[-2000:]
    from cpixelcnn.rundir import checkpoint_dirs

    for directory in [tmp_path / "run", *checkpoint_dirs(tmp_path / "run")]:  # every checkpoint the run keeps
        for use_ema in (False, True):
            model, _ = load_run(directory, use_ema=use_ema)
            assert all(torch.isfinite(t).all() for t in model.state_dict().values())


@pytest.mark.parametrize("value,message", [(0.0, "--grad-clip must be a positive number"), (float("nan"), "--grad-clip must be a positive number")])
def test_bad_grad_clip(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, grad_clip=value, **TINY), log=lambda *a: None)


def test_grad_clip_sets_the_global_norm_and_non_finite_gradients_are_caught():
    model = torch.nn.Linear(3, 2)
    loss = model(torch.ones(4, 3)).pow(2).sum() * 100
    loss.backward()
    ranks = Ranks()
    assert torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]) > 1.0
    assert finite_step(loss, model, 1.0, ranks)
    assert torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item() == pytest.approx(1.0, rel=1e-5)
    model.bias.grad[0] = float("nan")
    assert not finite_step(loss, model, 1.0, ranks)
    assert not finite_step(loss * float("inf"), torch.nn.Linear(1, 1), None, ranks)  # no gradients, loss inf


@pytest.mark.slow
def test_data_parallel_ranks_agree_to_skip(tmp_path):
    """torchrun + gloo: rank 1 alone gets a NaN loss at its 2nd step; the all-reduced flag makes rank 0
    skip that step too (its own loss was finite), and training completes on both."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import cpixelcnn.training.objectives as t\n"
        "    real, calls = t.dmol_log_prob, [0]\n"
        "    def patched(*a, **k):\n"
        "        calls[0] += 1\n"
        "        out = real(*a, **k)\n"
        "        return out * float('nan') if calls[0] == 2 else out\n"
        "    t.dmol_log_prob = patched\n"
    )
    argv = ["--data", "demo", "--out", str(tmp_path / "run"), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "6", "--nr-mix", "2",
            "--batch-size", "8", "--max-steps", "4", "--device", "cpu", "--log-every", "1"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518", "-m", "cpixelcnn", "train", *argv],
                          capture_output=True, text=True, env=env, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "train_bpd" in r]
    assert [r["step"] for r in steps] == [1, 3, 4] and steps[-1]["skipped_steps"] == 1  # rank 0 skipped step 2 as well
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=False)
    assert state["scheduler"]["last_epoch"] == 3


def test_polyak_average_warms_up_like_tensorflow():
    """d_n = min(decay, (1 + n) / (10 + n)): the first updates follow the weights closely, so a
    short run's average is not its initialisation (0.9995 alone has a ~1400-step half-life)."""
    from cpixelcnn.training import PolyakAverage

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = PolyakAverage(model, 0.9995, None)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 4.0, 8.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
        decay = min(0.9995, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * value
        assert abs(average.state["weight"].item() - expected) < 1e-6
    assert average.updates == 4 and TrainConfig(data="demo", out="run").ema == 0.9995  # on by default: classify uses the average


def test_the_time_limit_and_checkpoint_interval_follow_the_injected_clock(tmp_path):
    """A clock passed to train (the Trainer's constructor) that moves one second per reading: the
    60-second budget ends the run long before max_steps, and 15-second checkpoints are written on the way."""
    from cpixelcnn.rundir import checkpoint_dirs

    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    run = tmp_path / "run"
    result = train(TrainConfig(out=str(run), max_steps=1000, max_seconds=60, checkpoint_every=0.25, **TINY), log=lambda *a: None, clock=clock)
    assert 5 < result["steps"] < 60  # a few readings per step
    assert json.loads((run / "config.json").read_text())["step"] == result["steps"]  # stopped with a checkpoint
    steps = sorted(int(p.name[5:]) for p in checkpoint_dirs(run))
    assert len(steps) == 2 and steps[-1] == result["steps"] and 0 < steps[0] < steps[-1]  # a periodic one came before the last


def test_one_resume_rule_for_the_command_line_and_the_api(tmp_path, capsys):
    """A fixed setting asked for with another value than the run's is refused by both, in the same
    words; a setting left out is taken from the run by both."""
    from cpixelcnn.cli import main

    quiet = lambda *a: None  # noqa: E731
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=1, **TINY), log=quiet)
    with pytest.raises(ValueError) as api:
        train(TrainConfig(out=str(run), max_steps=2, resume=True, **(TINY | {"nr_filters": 7})), log=quiet)
    code = main(["train", "--data", "demo", "--out", str(run), "--resume", "--max-steps", "2", "--nr-filters", "7"])
    cli = [line for line in capsys.readouterr().err.splitlines() if "%|" not in line]  # the first run's progress bar may close late
    assert code == 2 and len(cli) == 1 and cli[0] == f"cpixelcnn: error: {api.value}"
    assert "--nr-filters 7 (run: 6)" in str(api.value) and "cannot change on --resume" in str(api.value)
    steps_before = len(_losses(run))
    # left out (the API at its defaults, the command line without the flags): the run's settings
    train(TrainConfig(data="demo", out=str(run), max_steps=2, resume=True, log_every=1), log=quiet)
    assert main(["train", "--data", "demo", "--out", str(run), "--resume", "--max-steps", "3", "--log-every", "1"]) == 0
    assert len(_losses(run)) == steps_before + 2
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["nr_filters"] == 6 and config["train"]["batch_size"] == 8


def test_training_leaves_the_callers_config_as_it_was(tmp_path):
    import dataclasses

    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=1, **TINY)
    before = dataclasses.asdict(cfg)
    train(cfg, log=lambda *a: None)
    assert dataclasses.asdict(cfg) == before and cfg.val_data is None and cfg.keep_best is None
