"""What a newcomer extends: a benchmark is a module in benchmarks/ (found, with its smoke arguments),
a data format is a module that registers itself (the CLI's help and errors follow)."""

import ast
from pathlib import Path

import pytest
import torch

from cpixelcnn import data as data_pkg
from cpixelcnn.cli import build_parser, main
from cpixelcnn.commands.bench import benchmark_modules, smoke_arguments


def _declared_flags(path: Path) -> set[str]:
    flags = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def test_every_benchmark_module_is_found_and_its_smoke_arguments_exist(source_tree):
    modules = benchmark_modules(source_tree)
    on_disk = {p.stem for p in (source_tree / "benchmarks").glob("*.py")} - {"__init__", "common", "tables"}
    assert {p.stem for p in modules.values()} == on_disk and {"ood", "photo_task", "checkpoint_activations", "predict_gpu"} <= set(modules)
    for name, path in modules.items():
        flags = _declared_flags(path)
        assert "--out" in flags, f"{name}: smoke mode writes --out into a temporary folder"
        assert {a for a in smoke_arguments(path) if a.startswith("--")} <= flags, name
    assert smoke_arguments(modules["dmol"]) == ["--smoke"]
    assert smoke_arguments(modules["kernel_resources"])[:2] == ["--dtypes", "fp32"]


def test_the_bench_command_offers_every_benchmark(capsys):
    if not benchmark_modules():
        pytest.skip("an installed package has no benchmarks/")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--only", "no-such-benchmark"])
    assert "photo_task" in capsys.readouterr().err


def test_a_new_data_format_is_one_registration(tmp_path, capsys, monkeypatch):
    """Registered once, a format is loadable by name, listed in --data's help, and named in errors."""
    monkeypatch.setattr(data_pkg.registry, "FORMATS", dict(data_pkg.FORMATS))

    def load(request):
        n = 6
        images = torch.full((n, request.channels, request.size, request.size), 17, dtype=torch.uint8)
        return data_pkg.Dataset(images, torch.arange(n) % 2, ["even", "odd"], layout="flat")

    data_pkg.register(data_pkg.DataFormat("flat", "builtin", "flat", "six grey squares, 2 classes", load, lambda source, split: True, _native))
    ds = data_pkg.load_dataset("flat", "train", size=5, channels=1)
    assert ds.images.shape == (6, 1, 5, 5) and ds.class_names == ["even", "odd"] and ds.layout == "flat"
    assert data_pkg.load_dataset("builtin:flat", "validation", size=5, holdout=2).images.shape[0] == 2
    assert "flat" in data_pkg.data_help() and data_pkg.has_split("flat", "test")
    with pytest.raises(data_pkg.DataError, match="builtin:flat"):
        data_pkg.load_dataset("builtin:nope")
    with pytest.raises(ValueError, match="registered twice"):
        data_pkg.register(data_pkg.DataFormat("flat", "builtin", "flat", "again", load, lambda source, split: True, _native))
    with pytest.raises(ValueError, match="needs recognises"):
        data_pkg.register(data_pkg.DataFormat("tree2", "folder", "FOLDER", "x", load, lambda source, split: True, _native))


def _native(source):
    return data_pkg.registry.Native(None, None, ["even", "odd"], ("train", "validation", "test"))


def test_folder_formats_are_tried_in_order(tmp_path):
    from helpers import make_course_layout

    course = make_course_layout(tmp_path / "course")
    assert data_pkg.resolve(str(course))[0].name == "course"
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    assert data_pkg.resolve(str(tree))[0].name == "folders"
    with pytest.raises(data_pkg.DataError, match="does not exist"):
        data_pkg.resolve(str(tmp_path / "missing"))
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
