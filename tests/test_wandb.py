"""--wandb: every metrics record goes to one W&B run per run directory, a resumed run continues it,
and without the wandb package the run is refused in one line before anything is written. The
wandb module is replaced by a recorder (no network, no wandb install needed)."""

import json
import sys
import types

import pytest

from cpixelcnn.cli import main
from cpixelcnn.training import TrainConfig, train

TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, batch_size=8, val_data="none", device="cpu", log_every=2)


class Recorder:
    def __init__(self):
        self.runs = []

    def init(self, **kwargs):
        run = types.SimpleNamespace(kwargs=kwargs, logged=[], finished=False)
        run.log = lambda data, step=None: run.logged.append((step, data))
        run.finish = lambda: setattr(run, "finished", True)
        self.runs.append(run)
        return run


@pytest.fixture
def fake_wandb(monkeypatch):
    recorder = Recorder()
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=recorder.init))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return recorder


def test_every_metrics_record_is_logged_and_a_resumed_run_continues_the_same_wandb_run(tmp_path, fake_wandb):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), max_steps=4, wandb=True, **TINY), log=lambda *a: None)
    train(TrainConfig(out=str(run), max_steps=8, wandb=True, resume=True, **TINY), log=lambda *a: None)
    first, second = fake_wandb.runs
    assert first.kwargs["id"] == second.kwargs["id"] == (run / "wandb" / "run-id").read_text()
    assert first.kwargs["resume"] == "allow" and first.kwargs["project"] == "cpixelcnn" and first.kwargs["dir"] == str(run)
    assert first.kwargs["config"]["max_steps"] == 4 and second.kwargs["config"]["max_steps"] == 8
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [data for _, data in first.logged + second.logged]
    assert logged == [{k: v for k, v in r.items() if v is not None} for r in records]
    assert [step for step, _ in first.logged + second.logged] == [r["step"] for r in records] and records[-1]["step"] == 8
    assert first.finished and second.finished


def test_wandb_project_comes_from_the_environment(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "course-2026")
    train(TrainConfig(out=str(tmp_path / "run"), max_steps=1, wandb=True, **TINY), log=lambda *a: None)
    assert fake_wandb.runs[0].kwargs["project"] == "course-2026"


def test_without_the_wandb_package_the_run_is_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    argv = ["train", "--data", "demo", "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--max-steps", "1",
            "--val-data", "none", "--out", str(tmp_path / "run"), "--wandb"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cpixelcnn: error: --wandb needs the wandb package (pip install wandb); metrics.jsonl is written either way"]
    assert not (tmp_path / "run").exists()
