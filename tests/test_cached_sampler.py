"""The cached incremental sampler gives the naive sampler's images."""

import itertools

import pytest
import torch

import cpixelcnn
from cpixelcnn import sample
from cpixelcnn.sampling import draw_noise
from cpixelcnn.sampling.cached_sampler import cached_sample
from cpixelcnn.sampling.engines import engines_on

from helpers import tiny_model

pytestmark = pytest.mark.skipif(not cpixelcnn.extension_available(), reason="compiled extension not built")

CONFIGS = [(c, cond, fusion) for c, (cond, fusion) in itertools.product([1, 3], itertools.product(["additive", "film"], ["early", "middle", "late"]))]


CPU_ENGINES = [e.name for e in engines_on("cpu")]  # the C++ loop, and the CUDA kernels' own source run on the CPU


@pytest.mark.parametrize("engine", CPU_ENGINES)
@pytest.mark.parametrize("channels,conditioning,fusion", CONFIGS)
def test_identical_to_naive_in_float64(channels, conditioning, fusion, engine):
    model = tiny_model(in_channels=channels, conditioning=conditioning, fusion=fusion, nr_resnet=1 + (fusion == "middle"), nr_logistic_mix=3)
    labels = torch.tensor([0, 3, 1])
    naive = sample(model, labels, image_size=(7, 9), method="naive", generator=torch.Generator().manual_seed(11))
    cached = cached_sample(model, labels, 3, 7, 9, draw_noise(3, channels, 7, 9, torch.Generator().manual_seed(11)), engine=engine)
    assert cached.dtype == torch.float64
    assert torch.equal(cached, naive)


class _Rewired:
    """An executor around another that changes the network: the ul stream starts from "above"
    twice instead of above + left, and the output layer reads 2·ul. Still causal."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def add(self, a, b):
        return self.inner.add(a, a)

    def output(self, layer, x):
        return self.inner.output(layer, self.inner.add(x, x))


class RewiredPixelCNN(cpixelcnn.ConditionalPixelCNN):
    def topology(self, ops, x):
        return super().topology(_Rewired(ops), x)


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_the_cached_sampler_follows_a_changed_topology(engine):
    """The lowering is the model's own topology: change the network, and the cached sampler still
    equals the naive one (a hand-written copy of the forward pass would not follow)."""
    model = tiny_model(nr_resnet=1, nr_logistic_mix=3)
    rewired = RewiredPixelCNN(**model.config).to(torch.float64).eval()
    rewired.load_state_dict(model.state_dict())
    labels, x = torch.tensor([0, 2]), torch.rand(2, 3, 6, 5, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(model(x, labels), rewired(x, labels))  # the rewiring changes the output
    for net in (model, rewired):  # same config: the schedules must not be shared
        naive = sample(net, labels, image_size=(6, 5), method="naive", generator=torch.Generator().manual_seed(5))
        cached = cached_sample(net, labels, 2, 6, 5, draw_noise(2, 3, 6, 5, torch.Generator().manual_seed(5)), engine=engine)
        assert torch.equal(cached, naive)


@pytest.mark.parametrize("engine", CPU_ENGINES)
@pytest.mark.parametrize("channels,size,batch", [(3, (1, 1), 1), (1, (4, 4), 1), (3, (5, 3), 2), (3, (9, 4), 1)])
def test_unconditional_and_edge_sizes(channels, size, batch, engine):
    model = tiny_model(in_channels=channels, num_classes=0, nr_resnet=2)
    naive = sample(model, None, image_size=size, batch_size=batch, method="naive", generator=torch.Generator().manual_seed(2))
    cached = cached_sample(model, None, batch, *size, draw_noise(batch, channels, *size, torch.Generator().manual_seed(2)), engine=engine)
    assert torch.equal(cached, naive)


def test_per_step_params_equal_a_full_forward_float32():
    """The params each pixel was sampled from equal a full forward pass on the finished image
    (which, by causality, is what a forward on the partial image gives at that step)."""
    model = tiny_model(nr_filters=8, nr_resnet=2, nr_logistic_mix=4, dtype=torch.float32)
    labels = torch.tensor([2, 0])
    noise = draw_noise(2, 3, 8, 8, torch.Generator().manual_seed(4))
    images, params = cached_sample(model, labels, 2, 8, 8, noise, return_params=True)
    with torch.no_grad():
        full = model(images, labels)
    assert ((params - full).abs().max() / full.abs().max()).item() < 1e-5
    naive = sample(model, labels, image_size=(8, 8), method="naive", generator=torch.Generator().manual_seed(4))
    identical = (naive == images).float().mean().item()
    print(f"float32: {identical:.4%} of pixels identical to naive")
    assert identical > 0.95  # rounding order can flip a level rarely, and later pixels follow it


def test_schedule_is_reused_and_weights_are_not_cached():
    model = tiny_model()
    first = sample(model, torch.tensor([1]), image_size=(5, 5), method="cached", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.nin_out.conv.bias.add_(0.5)  # same architecture, new weights
    second = sample(model, torch.tensor([1]), image_size=(5, 5), method="cached", generator=torch.Generator().manual_seed(0))
    naive = sample(model, torch.tensor([1]), image_size=(5, 5), method="naive", generator=torch.Generator().manual_seed(0))
    assert torch.equal(second, naive) and not torch.equal(first, second)


def test_clear_error_without_the_extension(monkeypatch):
    from cpixelcnn import _extension

    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "IMPORT_ERROR", "No module named 'cpixelcnn._C'")
    with pytest.raises(RuntimeError, match=r"the cached sampler \(method='cached'\) needs the compiled extension"):
        sample(tiny_model(), torch.tensor([0]), image_size=(2, 2), method="cached")
    with pytest.raises(RuntimeError, match="float32 and float64"):
        monkeypatch.undo()
        sample(tiny_model(dtype=torch.bfloat16), torch.tensor([0]), image_size=(2, 2), method="cached")


# -- CUDA path: its kernels run on the CPU through the host shim (engine="cuda-emulated", also above) --

from cpixelcnn import _extension  # noqa: E402
from cpixelcnn.sampling.cached_sampler import kernel_launches  # noqa: E402

from helpers import requires_cuda  # noqa: E402


def test_emulated_float32_params_match_a_full_forward():
    model = tiny_model(nr_filters=8, nr_resnet=2, nr_logistic_mix=4, dtype=torch.float32)
    labels = torch.tensor([2, 0])
    images, params = cached_sample(
        model, labels, 2, 8, 8, draw_noise(2, 3, 8, 8, torch.Generator().manual_seed(4)), return_params=True, engine="cuda-emulated"
    )
    with torch.no_grad():
        full = model(images, labels)
    assert ((params - full).abs().max() / full.abs().max()).item() < 1e-5


def test_launch_count_from_the_schedule_is_what_the_launcher_issues(monkeypatch):
    """kernel_launches (Python, from the schedule) == launches the shared launch order really made."""
    model = tiny_model(nr_resnet=2)
    counted = []
    real = _extension._C.cached_sample_emulated
    monkeypatch.setattr(_extension._C, "cached_sample_emulated", lambda *args: counted.append(real(*args)) or counted[-1])
    cached_sample(model, torch.tensor([1, 2]), 2, 6, 5, draw_noise(2, 3, 6, 5), engine="cuda-emulated")
    assert counted == [kernel_launches(model, 6, 5)]
    assert counted[0] > 6 * 5  # at least one op launch per pixel as well as the sampling launch


def test_engine_choice_errors():
    model = tiny_model()
    noise = draw_noise(1, 3, 2, 2)
    with pytest.raises(ValueError, match="engine must be one of"):
        cached_sample(model, torch.tensor([0]), 1, 2, 2, noise, engine="gpu")
    with pytest.raises(RuntimeError, match="engine 'cuda' needs a CUDA model"):
        cached_sample(model, torch.tensor([0]), 1, 2, 2, noise, engine="cuda")


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("channels", [1, 3])
def test_cuda_cached_identical_to_naive_float64(channels):
    model = tiny_model(in_channels=channels, nr_resnet=2, nr_logistic_mix=3).cuda()
    labels = torch.tensor([0, 3, 1], device="cuda")
    naive = sample(model, labels, image_size=(7, 9), method="naive", generator=torch.Generator().manual_seed(11))
    cached = sample(model, labels, image_size=(7, 9), method="cached", generator=torch.Generator().manual_seed(11))
    assert cached.is_cuda and torch.equal(cached, naive)


def test_every_kernel_build_and_thread_count_gives_the_same_images():
    """Each tile-kernel build (AVX-512, AVX2+FMA, baseline vectors) gives the naive sampler's
    images in float64, and float32 images that do not depend on the thread count (each output
    is summed in one fixed order whichever way the threads split the product). The model has
    output channels that are not a whole number of vectors and a batch that is not a whole
    number of row tiles."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch; from helpers import tiny_model; from cpixelcnn import sample\n"
        "from cpixelcnn import _extension as e; print(e._C.cached_sampler_isa())\n"
        "m = tiny_model(in_channels=3, nr_resnet=2, nr_filters=10, nr_logistic_mix=3); labels = torch.tensor([0, 3, 1, 2, 0])\n"
        "a = sample(m, labels, image_size=(6, 7), generator=torch.Generator().manual_seed(3))\n"
        "b = sample(m, labels, image_size=(6, 7), method='cached', generator=torch.Generator().manual_seed(3))\n"
        "assert torch.equal(a, b), 'float64 cached != naive'\n"
        "m32 = m.float(); runs = []\n"
        "for threads in (1, 3):\n"
        "    torch.set_num_threads(threads)\n"
        "    runs.append(sample(m32, labels, image_size=(9, 8), method='cached', generator=torch.Generator().manual_seed(5)))\n"
        "assert torch.equal(runs[0], runs[1]), 'float32 images depend on the thread count'\n"
        "print('same')\n"
    )
    ran = []
    for isa in ("avx512", "avx2", "baseline"):
        env = dict(__import__("os").environ, CPIXELCNN_SAMPLER_ISA=isa)
        proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=300)
        if isa != "baseline" and f"CPIXELCNN_SAMPLER_ISA={isa}, but this CPU" in proc.stderr:
            continue  # a build this CPU cannot run
        assert proc.returncode == 0 and proc.stdout.split() == [isa, "same"], (isa, proc.stdout, proc.stderr[-2000:])
        ran.append(isa)
    print("kernel builds checked:", ran)


def test_unknown_kernel_build_is_a_clear_error():
    import subprocess
    import sys

    code = "import torch; from cpixelcnn import _extension as e; e._C.cached_sampler_isa()"
    env = dict(__import__("os").environ, CPIXELCNN_SAMPLER_ISA="sse9")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "CPIXELCNN_SAMPLER_ISA must be avx512, avx2 or baseline" in proc.stderr
