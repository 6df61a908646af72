"""Each kind of extension is made where the README's "Extending cpixelcnn" says, and everything else
follows from that one registration: a toy op, a toy sampler engine, a toy command and a toy data
format, each added here the way a contributor adds the real thing."""

import types

import pytest
import torch

from cpixelcnn import trust
from cpixelcnn.cli import build_parser, main


@pytest.fixture
def registries():
    """The registries of ops, engines, checks and data formats as they are, put back after the test."""
    from cpixelcnn import cached
    from cpixelcnn.data import registry
    from cpixelcnn.ops import backend

    kept = [(table, dict(table)) for table in (backend.OPS, cached.ENGINES, registry.FORMATS)]
    checks = list(trust._CHECKS)
    yield
    for table, contents in kept:
        table.clear()
        table.update(contents)
    trust._CHECKS[:] = checks


def test_an_op_is_its_kernels_module_and_one_registration(registries):
    """ops/<op>.py calls register_op: the Triton path's availability imports its kernels, its check joins backend:triton (doctor, the gate)."""
    from cpixelcnn.ops.backend import OPS, register_op

    register_op("toy", "cpixelcnn.kernels.gated_film", lambda device: (0.0, "toy against its reference"), tolerance=0.0)
    assert "toy" in OPS and [c.name for c in trust.checks("backend:triton")][-1] == "toy"
    results = {r.name: r for r in trust.run_checks(torch.device("cpu"), "backend:triton")}
    assert results["toy"].status in ("pass", "skip")  # skipped only where Triton cannot run at all


def test_an_engine_is_its_cpp_unit_and_one_registration(registries):
    """cached.register_engine (the C++ unit binds its function itself): the choices, --engine's help,
    auto's order and the doctor's checks follow; a toy engine here reuses the CPU engine's function."""
    from cpixelcnn.cached import Engine, engine_choices, register_engine
    from cpixelcnn.sampling import sample

    from helpers import tiny_model

    register_engine(Engine("toy", "cached_sample", "cpu", "a toy engine for the tests", auto=False))
    assert engine_choices()[-1] == "toy"
    engine_action = next(a for a in build_parser()._subparsers._group_actions[0].choices["sample"]._actions if a.dest == "engine")
    assert "toy" in engine_action.choices and "toy: a toy engine for the tests" in engine_action.help
    assert [c.path for c in trust.checks("engine:toy")] == ["engine:toy"]
    from cpixelcnn._extension import extension_available

    if extension_available():
        model, labels = tiny_model(), torch.tensor([0, 2])
        naive = sample(model, labels, (3, 4), method="naive", generator=torch.Generator().manual_seed(1))
        assert torch.equal(sample(model, labels, (3, 4), engine="toy", generator=torch.Generator().manual_seed(1)), naive)
        assert trust.run_checks(torch.device("cpu"), "engine:toy")[0].status == "pass"


def test_a_command_is_its_module_and_one_entry(monkeypatch, capsys):
    """A module with NAME, HELP, add_arguments and run, listed in cpixelcnn.commands.COMMANDS."""
    from cpixelcnn import commands

    def run(args):
        print(f"toy says {args.word}")
        return 0

    toy = types.SimpleNamespace(NAME="toy", HELP="a toy command", add_arguments=lambda p: p.add_argument("--word", default="hi"), run=run)
    monkeypatch.setattr(commands, "COMMANDS", (*commands.COMMANDS, toy))
    monkeypatch.setattr("cpixelcnn.cli.COMMANDS", commands.COMMANDS)
    assert main(["toy", "--word", "hello"]) == 0 and capsys.readouterr().out == "toy says hello\n"


def test_a_data_format_is_its_module_and_one_registration(registries):
    """data.registry.register: --data's help and load_dataset follow."""
    from cpixelcnn.data import DataFormat, Dataset, data_help, load_dataset, register
    from cpixelcnn.data.registry import Native

    def load(request):
        n = int(request.source)
        return Dataset(torch.full((n, request.channels, request.size, request.size), 7, dtype=torch.uint8), torch.arange(n) % 2, ["a", "b"])

    register(
        DataFormat(
            "toy", "prefix", "toy:N", "N grey-7 images", load, lambda source, split: split == "train", lambda source: Native(4, 1, None, ("train",))
        )
    )
    assert "toy:N" in data_help()
    ds = load_dataset("toy:5", "train", 4, 1)
    assert len(ds) == 5 and ds.images.shape == (5, 1, 4, 4) and ds.class_names == ["a", "b"]
