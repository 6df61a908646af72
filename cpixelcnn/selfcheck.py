"""Numerical self-checks of every fast path against its eager reference, on one device.

Each check runs a small case in float64 (the references are exact there) and returns a
:class:`CheckResult` with the largest error, the tolerance and the time taken. ``cpixelcnn doctor``
runs them all; :mod:`cpixelcnn.trust` runs the one a CUDA device needs before ``auto`` uses it.
On a CPU the Triton kernels can only run in Triton's interpreter (``TRITON_INTERPRET=1``, set
before the kernels are imported); :func:`run_checks` says when they were skipped and why.
"""

from __future__ import annotations

import dataclasses
import time

import torch

# Which checks guard which fast path that ``auto`` may pick on a CUDA device.
FAST_PATHS = {"triton": ("dmol-triton", "gated-film-triton"), "cached-cuda": ("cached-sampler-cuda",)}


@dataclasses.dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    error: float | None = None  # the largest difference from the reference
    tolerance: float | None = None
    seconds: float = 0.0
    detail: str = ""

    @property
    def status(self) -> str:
        return "skip" if self.passed is None else "pass" if self.passed else "FAIL"


def _timed(name: str, tolerance: float, compare) -> CheckResult:
    """Run ``compare() -> (error, detail)``; an exception is a failure naming it."""
    start = time.perf_counter()
    try:
        error, detail = compare()
    except Exception as err:  # noqa: BLE001 - a fast path that raises has failed its check
        return CheckResult(name, False, None, tolerance, time.perf_counter() - start, f"{type(err).__name__}: {err}")
    passed = error is not None and error <= tolerance
    return CheckResult(name, passed, error, tolerance, time.perf_counter() - start, detail)


def _max_diff(pairs) -> float:
    return max((a.double() - b.double()).abs().max().item() for a, b in pairs)


def check_dmol_triton(device: torch.device) -> CheckResult:
    """Fused DMoL log-likelihood forward and backward (Triton) against the eager reference, float64."""
    from cpixelcnn.ops.dmol import dmol_log_prob_eager, dmol_log_prob_triton, params_per_mixture

    def compare():
        g = torch.Generator().manual_seed(0)
        pairs = []
        for channels, mixtures, (b, h, w) in ((3, 5, (2, 5, 7)), (1, 3, (1, 4, 3))):
            levels = torch.randint(0, 256, (b, channels, h, w), generator=g)
            x = (levels.double() / 127.5 - 1.0).to(device)
            params = (2 * torch.randn(b, mixtures * params_per_mixture(channels), h, w, generator=g, dtype=torch.float64)).to(device)
            weights = torch.randn(b, h, w, generator=g, dtype=torch.float64).to(device)
            grads = []
            for fn in (dmol_log_prob_eager, dmol_log_prob_triton):
                p = params.clone().requires_grad_(True)
                out = fn(x, p, 8, per_pixel=True)
                grads.append((out, torch.autograd.grad((out * weights).sum(), p)[0]))
            pairs += [(grads[1][0], grads[0][0]), (grads[1][1], grads[0][1])]
        return _max_diff(pairs), "forward and backward, grey and RGB, float64"

    return _timed("dmol-triton", 1e-9, compare)


def check_gated_film_triton(device: torch.device) -> CheckResult:
    """Fused gate + FiLM + residual forward and backward (Triton) against eager, float64."""
    from cpixelcnn.ops.gated_film import gated_film_eager, gated_film_triton

    def compare():
        g = torch.Generator().manual_seed(1)
        pairs = []
        for mode in ("film", "additive", "unconditional"):
            b, f, h, w = 2, 3, 5, 7
            new = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(device)  # noqa: E731
            x, hidden, weights = new(b, f, h, w), new(b, 2 * f, h, w), new(b, f, h, w)
            gamma = new(b, 2 * f) if mode == "film" else None
            beta = new(b, 2 * f) if mode != "unconditional" else None
            results = []
            for fn in (gated_film_eager, gated_film_triton):
                inputs = [t.clone().requires_grad_(True) if t is not None else None for t in (x, hidden, gamma, beta)]
                out = fn(*inputs)
                grads = torch.autograd.grad((out * weights).sum(), [t for t in inputs if t is not None])
                results.append((out, *grads))
            pairs += list(zip(results[1], results[0]))
        return _max_diff(pairs), "forward and backward, FiLM/additive/none, float64"

    return _timed("gated-film-triton", 1e-10, compare)


def _tiny_model(device: torch.device):
    from cpixelcnn.model import ConditionalPixelCNN

    torch.manual_seed(0)
    model = ConditionalPixelCNN(in_channels=3, num_classes=3, nr_resnet=1, nr_filters=8, nr_logistic_mix=3, dropout=0.0).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cond_head" in name:  # make the label matter (the heads start at zero)
                p.normal_(0.0, 0.5)
    return model.to(device).eval()


def check_cached_sampler(device: torch.device, engine: str) -> CheckResult:
    """The cached sampler (``engine``) against the naive sampler on a tiny float64 model with the
    same noise: the images must be identical (error = the fraction of differing values)."""
    from cpixelcnn import cached
    from cpixelcnn.sampling import draw_noise, sample

    def compare():
        model = _tiny_model(device)
        labels = torch.tensor([0, 2, 1], device=device)
        naive = sample(model, labels, image_size=(6, 7), method="naive", generator=torch.Generator().manual_seed(3))
        images = cached.cached_sample(model, labels, 3, 6, 7, draw_noise(3, 3, 6, 7, torch.Generator().manual_seed(3)), engine=engine)
        differ = (images.double().cpu() != naive.double().cpu()).double().mean().item()
        return differ, f"engine {engine}, 3 images 6x7, float64, identical pixels required"

    return _timed(f"cached-sampler-{engine}", 0.0, compare)


def check_dropout(device: torch.device) -> CheckResult:
    """The dropout mask's keep rate at p = 0.5 over 2²⁰ elements, within 6 standard deviations."""
    from cpixelcnn.ops.dropout import keep_mask

    n, p = 1 << 20, 0.5
    sigma = (p * (1 - p) / n) ** 0.5

    def compare():
        torch.manual_seed(0)
        rate = keep_mask((n,), p, device).double().mean().item()
        return abs(rate - (1 - p)), f"keep rate {rate:.5f} for p = {p} ({n} elements)"

    return _timed("dropout-keep-rate", 6 * sigma, compare)


def triton_skip_reason(device: torch.device) -> str | None:
    from cpixelcnn.ops.backend import triton_unavailable_reason

    return triton_unavailable_reason(device)


def run_checks(device: torch.device) -> list[CheckResult]:
    """Every self-check that can run on ``device``, and a skipped entry (with the reason) for the rest."""
    from cpixelcnn._extension import IMPORT_ERROR, extension_available
    from cpixelcnn.cached import engine_available

    results = []
    reason = triton_skip_reason(device)
    for check in (check_dmol_triton, check_gated_film_triton):
        name = check.__name__.removeprefix("check_").replace("_", "-")
        results.append(check(device) if reason is None else CheckResult(name, None, detail=reason))
    engines = ("cuda",) if device.type == "cuda" else ("cpu", "cuda-emulated")
    for engine in engines:
        if not extension_available():
            results.append(CheckResult(f"cached-sampler-{engine}", None, detail=f"the compiled extension is not available ({IMPORT_ERROR})"))
            continue
        if not engine_available(engine):
            results.append(
                CheckResult(
                    f"cached-sampler-{engine}", None, detail="the extension was built without this engine (no CUDA torch/toolkit at build time)"
                )
            )
            continue
        results.append(check_cached_sampler(device, engine))
    if device.type == "cpu":
        results.append(CheckResult("cached-sampler-cuda", None, detail="no CUDA device: the CUDA kernels were checked under CPU emulation instead"))
    results.append(check_dropout(device))
    return results


def run_fast_path_check(path: str, device: torch.device) -> list[CheckResult]:
    """The checks guarding one fast path (a key of :data:`FAST_PATHS`) on ``device``."""
    if path == "triton":
        return [check_dmol_triton(device), check_gated_film_triton(device)]
    if path == "cached-cuda":
        return [check_cached_sampler(device, "cuda")]
    raise ValueError(f"unknown fast path {path!r}: choose one of {', '.join(FAST_PATHS)}")
