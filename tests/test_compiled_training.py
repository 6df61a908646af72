"""--compile: a training step with the paper's dropout traces as one graph (no graph breaks), a run
compiles that graph once (steps, validation, averaged weights and checkpoints cause no recompile),
compiled steps compute the eager losses (the same dropout masks, also when checkpointed), and the
trainer says what it compiled — or why it could not, and trains eager."""

import pytest
import torch
import torch._dynamo as dynamo

from cpixelcnn import ConditionalPixelCNN
from cpixelcnn.training import TrainConfig, train
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
    """With the paper's dropout the compiled step is the eager step: the dropout masks come from the
    same traced operator, in the same order, from the same seeded generator — the same losses."""
    eager = train(TrainConfig(out=str(tmp_path / "eager"), max_steps=4, val_data="none", dropout=0.5, **TINY), log=lambda *a: None)
    _counting_compile(monkeypatch)
    compiled = train(
        TrainConfig(out=str(tmp_path / "compiled"), compile=True, max_steps=4, val_data="none", dropout=0.5, **TINY), log=lambda *a: None
    )
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-5) and len(_losses(eager)) == 4


def _tiny_model(checkpointed: bool, seed: int = 0) -> ConditionalPixelCNN:
    torch.manual_seed(seed)
    model = ConditionalPixelCNN(in_channels=3, num_classes=4, nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout=0.5).train()
    model.checkpoint_activations = checkpointed
    return model


def _loss_and_gradients(model, forward, x, y, seed):
    torch.manual_seed(seed)
    loss = likelihood_loss(forward, model, x, y, 0.0, "auto")
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss.detach(), grads


def test_compiled_and_checkpointed_the_dropout_masks_of_the_recomputation_are_the_forward_ones():
    """Under torch.compile with checkpointed activations the backward recomputes each gated resnet;
    its dropout masks must be the forward's (the mask operator is replayed from the saved generator
    state), or the gradients would be another network's. Compared with the eager, stored step."""
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    y = torch.tensor([0, 3])
    reference = _tiny_model(checkpointed=False)
    expected_loss, expected_grads = _loss_and_gradients(reference, reference, x, y, seed=5)
    model = _tiny_model(checkpointed=True)
    dynamo.reset()
    loss, grads = _loss_and_gradients(model, torch.compile(model, backend="aot_eager"), x, y, seed=5)
    assert torch.allclose(loss, expected_loss, rtol=1e-5)
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inductor_compiles_the_training_step_and_computes_the_eager_losses(tmp_path, capfd):
    """The real compiler as ``train --compile`` runs it on the CPU (inductor, forward and loss as one
    graph, the C++ wrapper): with dropout 0.5 the losses of three Adam steps are the eager ones, and
    the generated code draws no random numbers of its own (the masks are the cheap ones), and the
    compiler's warnings do not flood the run's output."""
    from torch._inductor.utils import run_and_get_code

    settings = dict(TINY, max_steps=3, val_data="none", dropout=0.5)
    eager = train(TrainConfig(out=str(tmp_path / "eager"), **settings), log=lambda *a: None)
    dynamo.reset()
    lines = []
    compiled, code = run_and_get_code(lambda: train(TrainConfig(out=str(tmp_path / "compiled"), compile=True, **settings), log=lines.append))
    assert "c-shim" not in capfd.readouterr().err  # the compiler's per-layer fallback warnings stay muted
    said = [line for line in lines if line.startswith("--compile:")]
    assert len(said) == 1 and "compiled the training step (forward, loss and backward) (C++ wrapper)" in said[0] and ": 1 graph;" in said[0], said
    code = "".join(code)
    assert "dropout_keep_mask" in code and "normalized_rand" not in code
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-4) and len(_losses(eager)) == 3


def test_where_the_compiler_refuses_the_cpp_wrapper_it_compiles_with_its_defaults(tmp_path, monkeypatch):
    real_compile = torch.compile
    graphs = []

    def backend_for(options):
        def backend(graph_module, example_inputs):
            if options:
                raise RuntimeError("cpp_wrapper: not for this graph")
            graphs.append(graph_module)
            return graph_module.forward

        return backend

    monkeypatch.setattr(torch, "compile", lambda fn, options=None, **kw: real_compile(fn, backend=backend_for(options)))
    dynamo.reset()
    lines = []
    summary = train(TrainConfig(out=str(tmp_path / "run"), compile=True, max_steps=3, val_data="none", device="cpu", **TINY), log=lines.append)
    said = [line for line in lines if line.startswith("--compile:")]
    assert len(said) == 1 and "compiled the training step" in said[0] and "C++ wrapper" not in said[0] and ": 1 graph;" in said[0], said
    assert len(graphs) == 1 and summary["steps"] == 3


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
