"""The cached incremental sampler gives the naive sampler's images."""
import itertools

import pytest
import torch

import cpixelcnn
from cpixelcnn import sample
from cpixelcnn.cached import cached_sample
from cpixelcnn.sampling import draw_noise
from conftest import tiny_model

pytestmark = pytest.mark.skipif(not cpixelcnn.extension_available(), reason="compiled extension not built")

CONFIGS = [(c, cond, fusion) for c, (cond, fusion) in itertools.product([1, 3], itertools.product(["additive", "film"], ["early", "middle", "late"]))]


@pytest.mark.parametrize("channels,conditioning,fusion", CONFIGS)
def test_identical_to_naive_in_float64(channels, conditioning, fusion):
    model = tiny_model(in_channels=channels, conditioning=conditioning, fusion=fusion, nr_resnet=1 + (fusion == "middle"), nr_logistic_mix=3)
    labels = torch.tensor([0, 3, 1])
    naive = sample(model, labels, image_size=(7, 9), generator=torch.Generator().manual_seed(11))
    cached = sample(model, labels, image_size=(7, 9), method="cached", generator=torch.Generator().manual_seed(11))
    assert cached.dtype == torch.float64
    assert torch.equal(cached, naive)


@pytest.mark.parametrize("channels,size,batch", [(3, (1, 1), 1), (1, (4, 4), 1), (3, (5, 3), 2), (3, (9, 4), 1)])
def test_unconditional_and_edge_sizes(channels, size, batch):
    model = tiny_model(in_channels=channels, num_classes=0, nr_resnet=2)
    naive = sample(model, None, image_size=size, batch_size=batch, generator=torch.Generator().manual_seed(2))
    cached = sample(model, None, image_size=size, batch_size=batch, method="cached", generator=torch.Generator().manual_seed(2))
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
    naive = sample(model, labels, image_size=(8, 8), generator=torch.Generator().manual_seed(4))
    identical = (naive == images).float().mean().item()
    print(f"float32: {identical:.4%} of pixels identical to naive")
    assert identical > 0.95  # rounding order can flip a level rarely, and later pixels follow it


def test_schedule_is_reused_and_weights_are_not_cached():
    model = tiny_model()
    first = sample(model, torch.tensor([1]), image_size=(5, 5), method="cached", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.nin_out.conv.bias.add_(0.5)  # same architecture, new weights
    second = sample(model, torch.tensor([1]), image_size=(5, 5), method="cached", generator=torch.Generator().manual_seed(0))
    naive = sample(model, torch.tensor([1]), image_size=(5, 5), generator=torch.Generator().manual_seed(0))
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


# -- CUDA path ------------------------------------------------------------------------------------

import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from conftest import requires_cuda  # noqa: E402

CSRC = Path(__file__).resolve().parent.parent / "csrc"
_INSTANTIATE = """
#include "cached_sampler_cuda.cuh"
using cpixelcnn::cuda::DevNode;
using cpixelcnn::cuda::OpDesc;
template __global__ void cpixelcnn::cuda::step_op_kernel<float>(OpDesc, DevNode<float>, DevNode<float>, DevNode<float>, const float*, const float*, const float*, const float*, const int32_t*, int, int);
template __global__ void cpixelcnn::cuda::step_op_kernel<double>(OpDesc, DevNode<double>, DevNode<double>, DevNode<double>, const double*, const double*, const double*, const double*, const int32_t*, int, int);
template __global__ void cpixelcnn::cuda::sample_pixel_kernel<float>(DevNode<float>, DevNode<float>, const double*, int, int, int, int, int, int, int);
template __global__ void cpixelcnn::cuda::sample_pixel_kernel<double>(DevNode<double>, DevNode<double>, const double*, int, int, int, int, int, int, int);
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_kernels_compile_with_nvcc(tmp_path):
    """The CUDA kernels build for Hopper even where no GPU (or CUDA torch) is present."""
    source = tmp_path / "check.cu"
    source.write_text(_INSTANTIATE)
    proc = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-I", str(CSRC), "-c", str(source), "-o", str(tmp_path / "check.o")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("channels", [1, 3])
def test_cuda_cached_identical_to_naive_float64(channels):
    model = tiny_model(in_channels=channels, nr_resnet=2, nr_logistic_mix=3).cuda()
    labels = torch.tensor([0, 3, 1], device="cuda")
    naive = sample(model, labels, image_size=(7, 9), generator=torch.Generator().manual_seed(11))
    cached = sample(model, labels, image_size=(7, 9), method="cached", generator=torch.Generator().manual_seed(11))
    assert cached.is_cuda and torch.equal(cached, naive)
