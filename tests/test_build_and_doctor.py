"""The build (no forced language standard, loud failures, CUDA defaults), `cpixelcnn doctor`, and
the rule that `auto` trusts a fast path on a device only after its self-check passed there."""

import ast
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from cpixelcnn import _toolchain, gate, notices
from cpixelcnn._extension import extension_available
from cpixelcnn.cli import main as cli_main
from cpixelcnn.sampling import cached_sampler


def _string_constants(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_setup_forces_no_language_standard(source_tree):
    """torch.utils.cpp_extension adds the standard the installed torch needs (C++20 from 2.14)."""
    forced = [s for s in _string_constants(source_tree / "setup.py") if "-std=" in s or "/std:" in s]
    assert forced == [], f"setup.py forces a C++ standard: {forced}"


def test_a_failing_build_stops_the_install_naming_the_cause_and_the_ways_out(tmp_path, source_tree):
    """A compiler that fails must fail the build (exit != 0) with its first error and both ways out."""
    fake = tmp_path / "fake-cxx"
    fake.write_text(
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = "-c" ] && { echo "fake.cpp:1:2: error: synthetic compiler failure"; exit 1; }; done\nexec c++ "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPIXELCNN_")}
    env.update(CXX=str(fake), CPIXELCNN_CUDA="0", MAX_JOBS="1")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-temp", str(tmp_path / "temp"), "--build-lib", str(tmp_path / "lib")],
                          cwd=source_tree, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "building the compiled extension cpixelcnn._C failed" in proc.stderr
    assert "synthetic compiler failure" in proc.stderr  # the cause, quoted from the compiler
    assert "CPIXELCNN_NO_EXTENSION=1" in proc.stderr and "fix the toolchain" in proc.stderr
    assert not list((tmp_path / "lib").rglob("*.so"))


def test_cuda_home_follows_an_nvcc_wrapper_script(tmp_path, monkeypatch):
    toolkit = tmp_path / "cuda-13.9"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    wrapper_dir = tmp_path / "usr-local-bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(wrapper_dir))
    assert _toolchain.find_cuda_home() == str(toolkit)  # not the wrapper's parent (/usr/local)
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    assert _toolchain.find_cuda_home() == str(toolkit)


def test_toolkit_release_is_read_from_nvcc_and_compared_by_major(tmp_path):
    """setup.py builds the CPU part only (saying why) when the toolkit's CUDA major differs from torch's."""
    (tmp_path / "bin").mkdir()
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    nvcc.chmod(0o755)
    assert _toolchain.toolkit_cuda_version(str(tmp_path)) == "12.4"
    assert _toolchain.toolkit_cuda_version(str(tmp_path / "missing")) is None
    assert _toolchain.same_cuda_major("13.0", "13.2") and not _toolchain.same_cuda_major("13.0", "12.4")
    assert not _toolchain.same_cuda_major(None, "12.4")


def test_first_error_quotes_the_compiler():
    log = (
        "[1/3] c++ -c a.cpp\nFAILED: a.o\ntorch/include/c10/macros.h:5:2: #error C++20 or later compatible compiler is required\nninja: build stopped"
    )
    assert "C++20 or later" in _toolchain.first_error(log)


# -- doctor -----------------------------------------------------------------------------------------


def test_doctor_json_on_the_cpu():
    proc = subprocess.run([sys.executable, "-m", "cpixelcnn", "doctor", "--json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CPIXELCNN_CACHE_DIR": "/nonexistent-cache"})  # fmt: skip
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["cpixelcnn"]
    assert checks["dropout keep rate"]["status"] == "pass"
    if not torch.cuda.is_available():
        assert checks["backend:triton dmol"]["status"] == "pass" and checks["backend:triton gated_film"]["status"] == "pass"  # in the interpreter
        cuda = checks["engine:cuda sampler"]
        assert cuda["status"] == "skip" and "this check runs on cpu (checked under emulation instead: cuda-emulated)" in cuda["detail"]
    if extension_available():
        assert checks["engine:cpu sampler"]["status"] == "pass" and checks["engine:cpu sampler"]["error"] == 0.0
        assert checks["engine:cuda-emulated sampler"]["status"] == "pass"
    assert proc.returncode == (0 if report["passed"] else 1)
    assert report["passed"]


@pytest.mark.skipif(not extension_available(), reason="needs the compiled extension")
def test_doctor_fails_on_a_broken_sampler_engine(monkeypatch, capsys):
    real = cached_sampler.cached_sample

    def broken(*args, **kwargs):  # one pixel off by one level
        images = real(*args, **kwargs).clone()
        images[0, 0, -1, -1] += 2.0 / 255.0
        return images

    monkeypatch.setattr(cached_sampler, "cached_sample", broken)
    monkeypatch.setenv("CPIXELCNN_CACHE_DIR", "/nonexistent-cache")
    assert cli_main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] engine:cpu sampler" in out and "SOME CHECKS FAILED" in out


def test_cli_doctor_is_wired():
    from cpixelcnn.cli import build_parser

    args = build_parser().parse_args(["doctor", "--json"])
    from cpixelcnn.commands import doctor as doctor_command

    assert args.func is doctor_command.run and args.json


# -- auto trusts a fast path only after it passed on that device --------------------------------------


class _Result:
    def __init__(self, passed):
        self.name, self.passed, self.detail, self.error, self.tolerance = "fake", passed, "" if passed else "wrong numbers", 1.0, 0.0


def test_a_failed_check_makes_auto_fall_back_once_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("CPIXELCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gate, "_KNOWN", {})
    monkeypatch.setattr(notices, "_SAID", set())
    calls = []

    def failing(path, device):
        calls.append(path)
        return [_Result(False)]

    device = torch.device("cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gate.trusted(device, "backend:triton", check=failing) is False
        assert gate.trusted(device, "backend:triton", check=failing) is False
    assert calls == ["backend:triton"]  # checked once
    assert [w.category for w in caught] == [notices.FallbackWarning]  # one warning
    saved = json.loads((tmp_path / "trust.json").read_text())
    assert saved[gate.device_key(device)]["backend:triton"]["passed"] is False
    monkeypatch.setattr(gate, "_KNOWN", {})  # a new process reads the verdict instead of checking again
    assert gate.trusted(device, "backend:triton", check=failing) is False and calls == ["backend:triton"]


def test_a_passed_check_is_trusted_without_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("CPIXELCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gate, "_KNOWN", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gate.trusted(torch.device("cpu"), "engine:cuda", check=lambda path, device: [_Result(True)]) is True


def test_auto_sampler_says_once_why_it_is_slow(monkeypatch):
    import cpixelcnn._extension as extension
    from cpixelcnn.sampling import fastest_method

    from helpers import tiny_model

    monkeypatch.setattr(extension, "_C", None)
    monkeypatch.setattr(extension, "IMPORT_ERROR", "not built")
    monkeypatch.setattr(notices, "_SAID", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fastest_method(tiny_model(), 32 * 32) == "naive"
        assert fastest_method(tiny_model(), 32 * 32) == "naive"
    assert len(caught) == 1 and "not built" in str(caught[0].message) and "1,024x slower" in str(caught[0].message)


@pytest.mark.skipif(os.environ.get("CPIXELCNN_EXPECT_CUDA_BUILD") != "1", reason="only where CI builds the CUDA extension (newest torch)")
def test_the_cuda_build_is_present_and_imports_without_a_gpu():
    from cpixelcnn._extension import _C, IMPORT_ERROR

    assert _C is not None, IMPORT_ERROR
    from cpixelcnn.sampling.engines import ENGINES

    assert all(hasattr(_C, engine.function) for engine in ENGINES.values()), [e.function for e in ENGINES.values() if not hasattr(_C, e.function)]
