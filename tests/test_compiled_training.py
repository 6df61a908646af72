"""--compile: a training step with the paper's dropout traces as one graph (no graph breaks), a run
compiles that graph once (steps, validation, averaged weights and checkpoints cause no recompile),
and the trainer says what it compiled — or why it could not, and trains eager."""

import pytest
import torch
import torch._dynamo as dynamo

from cpixelcnn import ConditionalPixelCNN
from cpixelcnn.train import TrainConfig, train
from cpixelcnn.training.objectives import likelihood_loss

from helpers import KERNEL_DEVICE, make_folders

TINY = dict(data="demo", image_size=8, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, batch_size=8, log_every=1)


# every pair of settings is covered by the six cases that run by default; the rest run with the slow tests
PAIRWISE = {("eager", "film", 1, False), ("eager", "additive", 3, True), ("eager", "unconditional", 1, True),
            ("triton", "film", 3, True), ("triton", "additive", 1, False), ("triton", "unconditional", 3, False)}  # fmt: skip
CASES = [
    pytest.param(backend, conditioning, channels, checkpointed, id=f"{backend}-{conditioning}-{'rgb' if channels == 3 else 'grey'}-{'checkpointed' if checkpointed else 'stored'}",
                 marks=() if (backend, conditioning, channels, checkpointed) in PAIRWISE else pytest.mark.slow)
    for backend in ("eager", "triton") for conditioning in ("film", "additive", "unconditional") for channels in (1, 3) for checkpointed in (False, True)
]  # fmt: skip


@pytest.mark.parametrize("backend,conditioning,channels,checkpointed", CASES)
def test_a_training_step_with_dropout_is_one_graph(backend, conditioning, channels, checkpointed):
    torch.manual_seed(0)
    num_classes = 0 if conditioning == "unconditional" else 4
    model = ConditionalPixelCNN(in_channels=channels, num_classes=num_classes, nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                                conditioning="film" if conditioning == "unconditional" else conditioning, dropout=0.5,
                                backend=backend).to(KERNEL_DEVICE).train()  # fmt: skip
    model.checkpoint_activations = checkpointed
    x = torch.rand(2, channels, 8, 8, device=KERNEL_DEVICE) * 2 - 1
    y = torch.tensor([0, 3], device=KERNEL_DEVICE) if num_classes else None

    def objective(x, y):  # what Trainer.step differentiates: the model's forward and the exact DMoL loss
        return likelihood_loss(model, model, x, y, 0.0, backend)

    dynamo.reset()
    explained = dynamo.explain(objective)(x, y)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), [str(b.reason) for b in explained.break_reasons]


def _counting_compile(monkeypatch):
    """torch.compile with a backend that records each graph it is handed and runs it as traced."""
    graphs = []
    real_compile = torch.compile

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=backend))
    dynamo.reset()
    return graphs


def _losses(summary):
    return [r["train_bpd"] for r in summary["history"] if "train_bpd" in r]


def test_a_compiled_run_compiles_its_step_once(tmp_path, monkeypatch):
    graphs = _counting_compile(monkeypatch)
    lines = []
    # three short epochs (8 training images, batch 4) with validation of the Polyak average after
    # each and a checkpoint at each epoch end, dropout 0.5
    folder = make_folders(tmp_path / "images", n=6, size=8)
    settings = dict(TINY, data=str(folder), batch_size=4)
    summary = train(TrainConfig(out=str(tmp_path / "run"), compile=True, epochs=3, val_split="4", **settings), log=lines.append)
    assert summary["steps"] == 6
    assert len(graphs) == 1, f"{len(graphs)} graphs compiled in one run"
    said = [line for line in lines if line.startswith("--compile:")]
    assert len(said) == 1 and "compiled the training step" in said[0] and ": 1 graph;" in said[0], said
    records = [json_line for json_line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "val_bpd" in json_line]
    assert len(records) == 3  # validated after each epoch, between compiled steps


def test_a_compiled_run_computes_what_an_eager_one_does(tmp_path, monkeypatch):
    """Without dropout the compiled step is the eager step: the same losses, step by step. (With
    dropout the compiled graph draws its own masks, with the same keep rate, from the same seeded
    generator: another draw, not the same one.)"""
    eager = train(TrainConfig(out=str(tmp_path / "eager"), max_steps=4, val_data="none", dropout=0.0, **TINY), log=lambda *a: None)
    _counting_compile(monkeypatch)
    compiled = train(
        TrainConfig(out=str(tmp_path / "compiled"), compile=True, max_steps=4, val_data="none", dropout=0.0, **TINY), log=lambda *a: None
    )
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-5) and len(_losses(eager)) == 4


def test_a_model_the_compiler_refuses_trains_eager_saying_why(tmp_path, monkeypatch):
    real_compile = torch.compile

    def refusing_backend(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler for this backend\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=refusing_backend))
    dynamo.reset()
    lines = []
    summary = train(TrainConfig(out=str(tmp_path / "run"), compile=True, max_steps=3, val_data="none", **TINY), log=lines.append)
    said = [line for line in lines if line.startswith("--compile:")]
    assert len(said) == 1 and "could not compile" in said[0] and "no C++ compiler" in said[0] and "training eager" in said[0], said
    assert "\n" not in said[0] and summary["steps"] == 3
    eager = train(TrainConfig(out=str(tmp_path / "eager"), max_steps=3, val_data="none", **TINY), log=lambda *a: None)
    assert _losses(summary) == _losses(eager) and len(_losses(eager)) == 3
