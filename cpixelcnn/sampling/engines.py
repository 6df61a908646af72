"""The engines of the cached sampler, in one place: what each is (its function in the compiled
extension, the device its models live on, what it emulates), ``auto``'s choice, whether the
extension has it, and each engine's self-check against the naive sampler (the fast path
``engine:NAME`` of :mod:`cpixelcnn.gate`).

A new engine is its C++ (or CUDA) unit in ``csrc/``, which binds its function itself, and one
:func:`register_engine` call at the end of this module; the CLI's ``--engine``, ``auto``, the
doctor, the GPU runbook, the docs' engine table and the tests follow from the registration.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from cpixelcnn import gate


@dataclasses.dataclass(frozen=True)
class Engine:
    """An engine of the cached sampler: ``function``, its name in the compiled extension (its C++
    unit registers it there), runs models on ``device``; ``help`` is its line in ``--engine``'s
    help, the doctor's list and the docs' table; ``auto`` may pick it for a model on its device (the
    first such in registration order), a ``gated`` one only once its self-check (``engine:NAME`` in
    :mod:`cpixelcnn.gate`) has passed on that device. ``emulates`` names the engine whose kernels it
    runs on another device (checked there in its place where that device is missing); ``source`` is
    the file under ``csrc/`` that holds its code."""

    name: str
    function: str
    device: str
    help: str
    source: str
    auto: bool = True
    gated: bool = False
    emulates: str | None = None


ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine) -> Engine:
    """Declare an engine: the CLI's ``--engine`` choices and help, ``auto``'s choice, the doctor's
    list and the self-checks all come from here."""
    if engine.name in ENGINES or engine.name == "auto":
        raise ValueError(f"sampler engine {engine.name!r} is registered twice (or is 'auto')")
    if engine.emulates is not None and engine.emulates not in ENGINES:
        raise ValueError(f"sampler engine {engine.name!r} emulates {engine.emulates!r}, which is not registered (register it first)")
    ENGINES[engine.name] = engine
    return engine


def engine_choices() -> tuple[str, ...]:
    """What ``engine=`` and ``--engine`` accept: ``auto`` and every registered engine."""
    return ("auto", *ENGINES)


def engine_help() -> str:
    return "; ".join(f"{e.name}: {e.help}" for e in ENGINES.values()) + "; auto (default): by the model's device"


def auto_engine(device_type: str) -> Engine | None:
    """The engine ``auto`` picks for a model on ``device_type``: the first registered one for it that ``auto`` may use."""
    return next((e for e in ENGINES.values() if e.auto and e.device == device_type), None)


def engines_on(device_type: str) -> list[Engine]:
    """The engines that run models on ``device_type`` (``"cuda"``: the extension's CUDA part)."""
    return [e for e in ENGINES.values() if e.device == device_type]


def emulations_of(engine: str) -> list[Engine]:
    """The engines that run ``engine``'s kernels on another device."""
    return [e for e in ENGINES.values() if e.emulates == engine]


def engine_available(engine: str, ext=None) -> bool:
    """Whether the compiled extension (``ext``, default: the installed one) has engine ``engine``."""
    if ext is None:
        from cpixelcnn._extension import _C as ext
    return ext is not None and hasattr(ext, "SamplerInputs") and hasattr(ext, ENGINES[engine].function)


def unavailable_reason(engine: str, ext=None) -> str | None:
    """Why engine ``engine`` cannot run here (None when it can)."""
    from cpixelcnn._extension import IMPORT_ERROR

    if ext is None:
        from cpixelcnn._extension import _C as ext
    if ext is None:
        return f"the compiled extension cpixelcnn._C is not available ({IMPORT_ERROR})"
    if engine_available(engine, ext):
        return None
    if ENGINES[engine].device == "cuda":
        return (
            "the compiled extension has no CUDA part (it was built without a CUDA torch and toolkit); "
            "rebuild with CPIXELCNN_CUDA=1 pip install --no-build-isolation -e ."
        )
    return f"the compiled extension has no {engine!r} engine; rebuild it with `pip install --no-build-isolation -e .`"


# -- every engine, checked against the naive sampler -----------------------------------------------


def _tiny_model(device: torch.device):
    from cpixelcnn.model import ConditionalPixelCNN

    torch.manual_seed(0)
    model = ConditionalPixelCNN(in_channels=3, num_classes=3, nr_resnet=1, nr_filters=8, nr_logistic_mix=3, dropout=0.0).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cond_head" in name:  # make the label matter (the heads start at zero)
                p.normal_(0.0, 0.5)
    return model.to(device).eval()


def _compare_engine(device: torch.device, engine: str) -> tuple[float, str]:
    """The fraction of values that differ between ``engine``'s images and the naive sampler's, same noise, float64."""
    from cpixelcnn.sampling.cached_sampler import cached_sample
    from cpixelcnn.sampling.sampler import draw_noise, sample

    model = _tiny_model(device)
    labels = torch.tensor([0, 2, 1], device=device)
    naive = sample(model, labels, image_size=(6, 7), method="naive", generator=torch.Generator().manual_seed(3))
    images = cached_sample(model, labels, 3, 6, 7, draw_noise(3, 3, 6, 7, torch.Generator().manual_seed(3)), engine=engine)
    return (images.double().cpu() != naive.double().cpu()).double().mean().item(), "3 images 6x7, float64, identical pixels required"


def _engine_skip(device: torch.device, engine: str) -> str | None:
    needs = ENGINES[engine].device
    if needs != device.type:
        emulated = [e.name for e in emulations_of(engine) if e.device == device.type]
        return f"runs {needs.upper()} models; this check runs on {device}" + (
            f" (checked under emulation instead: {emulated[0]})" if emulated else ""
        )
    return unavailable_reason(engine)


def _engine_checks() -> list[gate.Check]:
    return [
        gate.Check(f"engine:{name}", "sampler", functools.partial(_compare_engine, engine=name), 0.0, functools.partial(_engine_skip, engine=name))
        for name in ENGINES
    ]


gate.register_family("engine:", _engine_checks)


# -- the engines -----------------------------------------------------------------------------------

register_engine(
    Engine("cpu", "cached_sample", "cpu", "the C++ loop on the CPU (keeps only the rows of each activation that are live)", "csrc/cached_sampler.cpp")
)
register_engine(
    Engine("cuda", "cached_sample_cuda", "cuda", "the CUDA kernels, the whole loop one CUDA graph", "csrc/cached_sampler_cuda.cu", gated=True)
)
register_engine(
    Engine(
        "cuda-emulated",
        "cached_sample_emulated",
        "cpu",
        "the CUDA kernels and launch order compiled for the CPU (slow, exact: for checking the GPU code without a GPU)",
        "csrc/cached_sampler_emulated.cpp",
        auto=False,
        emulates="cuda",
    )
)
