"""No import runs upward: ops -> model -> sampling/classification -> training and run files -> commands.

Every ``import`` of a package module is read from the source (those inside functions too, which
run later but still tie the layers together) and compared by layer. The package's ``__init__``
is the public facade over every layer and is left out; a module reading the version imports
``cpixelcnn._version``, not the facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# Lowest first. A module may import its own layer and those before it. Modules not named here
# (a new module) fail the test until they are placed.
LAYERS = {
    "base": [
        "_version",
        "_C",
        "_extension",
        "_toolchain",
        "notices",
        "atomic_io",
        "settings",
        "devices",
        "plot",
        "gate",
        "dmol_layout",
        "host",
        "stopping",
        "tf_checkpoint",
    ],
    "ops and data": ["ops", "ops.*", "kernels", "kernels.*", "data", "data.*"],
    "model": ["layers", "model_config", "model", "per_class_model"],
    "sampling and classification": ["likelihood", "sampling", "sampling.*", "classifier", "metrics", "scoring"],
    "training and run files": ["rundir", "rundir.*", "checkpoint", "pixelcnnpp_port", "openai_import", "training", "training.*", "train"],
    "commands": ["cli", "commands", "commands.*", "__main__"],
}


def layer_of(module: str) -> int:
    for rank, patterns in enumerate(LAYERS.values()):
        for pattern in patterns:
            if module == pattern or (pattern.endswith(".*") and module.startswith(pattern[:-1])):
                return rank
    raise AssertionError(f"cpixelcnn.{module} is in no layer of tests/test_layers.py: place it there")


def package_modules(root: Path) -> dict[str, Path]:
    """'ops.dmol' -> its file, for every module of the package in the source tree ``root`` (kernels/ installs as cpixelcnn.kernels)."""
    found = {}
    for top, prefix in ((root / "cpixelcnn", ""), (root / "kernels", "kernels.")):
        for path in top.rglob("*.py"):
            parts = path.relative_to(top).with_suffix("").parts
            name = prefix + ".".join(parts)
            name = name.removesuffix(".__init__").removesuffix("__init__").rstrip(".")
            found[name] = path
    return found


def imported(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``module`` (at ``path``) imports, relative to ``cpixelcnn``."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if module else []
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "cpixelcnn" or node.module.startswith("cpixelcnn.")):
                target = node.module.removeprefix("cpixelcnn").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from cpixelcnn import cached` imports a module, not the facade
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if sub in modules or sub == "_C" else target)
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("cpixelcnn").lstrip(".") for a in node.names if a.name.split(".")[0] == "cpixelcnn"}
    return out


def test_every_module_is_placed_and_no_import_runs_upward(source_tree):
    modules = package_modules(source_tree)
    assert {"model", "ops.backend", "training.trainer", "cli", "data"} <= set(modules)
    upward = []
    for module, path in sorted(modules.items()):
        if module == "":  # the facade
            continue
        for target in sorted(imported(path, module, modules)):
            if target == "":
                upward.append(f"cpixelcnn.{module} imports the package facade `cpixelcnn` (import the module it needs)")
            elif layer_of(target) > layer_of(module):
                upward.append(f"cpixelcnn.{module} ({list(LAYERS)[layer_of(module)]}) imports cpixelcnn.{target} ({list(LAYERS)[layer_of(target)]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_the_walker_sees_an_upward_import(tmp_path, source_tree):
    """The check is not vacuous: a function-level import of the samplers from an op is caught."""
    op = tmp_path / "backend.py"
    op.write_text("def resolve():\n    from cpixelcnn.sampling import sample\n    from . import dmol\n")
    modules = package_modules(source_tree)
    found = imported(op, "ops.backend", modules)
    assert found == {"sampling", "ops.dmol"}
    assert layer_of("sampling") > layer_of("ops.backend")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("brand_new_module")


def test_one_gate_holds_every_fast_paths_checks_and_memoises_the_device():
    import torch

    from cpixelcnn import gate
    from cpixelcnn.ops import OPS
    from cpixelcnn.sampling.engines import ENGINES

    paths = {c.path for c in gate.checks()}
    assert {"backend:triton", *(f"engine:{name}" for name in ENGINES)} <= paths
    assert {c.name for c in gate.checks("backend:triton")} == set(OPS) and OPS
    gate.device_key.cache_clear()
    for _ in range(3):
        gate.device_key(torch.device("cpu"))
    assert gate.device_key.cache_info().hits == 2


@pytest.mark.parametrize(
    ("alias", "name", "home"), [("cpixelcnn.train", "TrainConfig", "cpixelcnn.training"), ("cpixelcnn.checkpoint", "load_run", "cpixelcnn.rundir")]
)
def test_old_module_names_are_warning_aliases(alias, name, home):
    """Users' old imports keep working and say where the name lives now; nothing in the package uses them."""
    import importlib

    module = importlib.import_module(alias)
    with pytest.warns(DeprecationWarning, match=f"import it from {home}"):
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError):
        module.not_a_name  # noqa: B018


def test_one_name_one_module(source_tree):
    """No two modules of the package share a file name (two `per_class.py`, two `doctor`), and no
    helper is defined twice across it. By the naming rules a command's module is named for its
    command (`commands/cache.py` runs `cpixelcnn cache`) and an op's kernels for its op; the old
    `train` is a warning alias."""
    from collections import Counter

    modules = package_modules(source_tree)
    named_by_rule = {m for m in modules if m.startswith(("commands.", "kernels."))} | {"train"}
    stems = Counter(path.stem for m, path in modules.items() if path.name != "__init__.py" and m not in named_by_rule)
    assert not [stem for stem, n in stems.items() if n > 1], "module names used twice"
    packages = {path.parent.name for path in modules.values() if path.name == "__init__.py"}
    assert not packages & set(stems), "a module named like a package"
    defined = Counter()
    for path in modules.values():
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.FunctionDef)
                and not node.name.startswith("_")
                and node.name not in {"run", "add_arguments", "specializations", "main"}
            ):
                defined[node.name] += 1
    assert not [f for f, n in defined.items() if n > 1], "public functions defined twice"
