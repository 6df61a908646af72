import math
import os

import pytest
import torch

import cpixelcnn
from cpixelcnn import dmol_log_prob, sample
from cpixelcnn.sampling import draw_noise, sample_pixel

from helpers import tiny_model


def _chi2_critical(df, z=3.719):  # z for p = 1e-4, Wilson–Hilferty approximation
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("c,bits,k", [(1, 3, 3), (3, 2, 2), (1, 8, 4)])
def test_pixel_sampler_follows_exact_bin_probabilities(c, bits, k):
    gen = torch.Generator().manual_seed(1234)
    params = torch.randn(1, (10 if c == 3 else 3) * k, generator=gen, dtype=torch.float64)
    params[:, k:] *= 0.7  # means and scales that spread mass over many levels
    n = 40000
    draws = sample_pixel(params.expand(n, -1), torch.rand(n, 1 + c, generator=gen, dtype=torch.float64), c, bits)
    levels = 2**bits
    index = torch.round((draws + 1) * (levels - 1) / 2).long()
    assert torch.equal(index.double() * 2 / (levels - 1) - 1, draws), "samples must lie exactly on the grid"
    code = sum(index[:, ch] * levels**ch for ch in range(c))
    counts = torch.bincount(code, minlength=levels**c).double()
    grid = torch.arange(levels, dtype=torch.float64) * 2 / (levels - 1) - 1
    values = torch.cartesian_prod(*([grid] * c)).reshape(-1, c) if c > 1 else grid.reshape(-1, 1)
    all_codes = torch.cartesian_prod(*([torch.arange(levels)] * c)).reshape(-1, c) if c > 1 else torch.arange(levels).reshape(-1, 1)
    m = values.shape[0]
    probs = dmol_log_prob(values.reshape(m, c, 1, 1), params.reshape(1, -1, 1, 1).expand(m, -1, -1, -1), bits=bits).exp()
    expected = torch.zeros(levels**c, dtype=torch.float64)
    expected[sum(all_codes[:, ch] * levels**ch for ch in range(c))] = probs * n
    keep = expected >= 5  # pool the sparse bins into one
    observed = torch.cat([counts[keep], counts[~keep].sum().reshape(1)])
    expect = torch.cat([expected[keep], expected[~keep].sum().reshape(1)])
    chi2 = ((observed - expect) ** 2 / expect.clamp(min=1e-12)).sum().item()
    df = int(keep.sum().item())
    assert df >= 3
    assert chi2 < _chi2_critical(df), f"chi2 {chi2:.1f} over {df} dof"


def test_noise_layout_is_documented_and_batch_prefix_stable():
    a = draw_noise(4, 3, 5, 6, torch.Generator().manual_seed(7))
    b = torch.rand((4, 5, 6, 4), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(a, b)


@pytest.mark.parametrize("channels,size", [(3, (5, 6)), (1, (3, 7))])
def test_naive_sample_is_exact_reconstruction(channels, size):
    """Every pixel equals what the per-pixel sampler gives from a full forward pass on the
    finished image (causality makes those the params seen while sampling)."""
    model = tiny_model(in_channels=channels, nr_logistic_mix=3)
    labels = torch.tensor([0, 3, 1])
    x = sample(model, labels, image_size=size, method="naive", generator=torch.Generator().manual_seed(3))
    assert x.shape == (3, channels, *size) and x.dtype == torch.float64
    noise = draw_noise(3, channels, *size, torch.Generator().manual_seed(3))
    params = model(x, labels)
    for i in range(size[0]):
        for j in range(size[1]):
            assert torch.equal(sample_pixel(params[:, :, i, j], noise[:, i, j], channels, 8), x[:, :, i, j])
    assert torch.isfinite(dmol_log_prob(x, params)).all()


def test_the_api_samples_as_the_command_line_does_by_default():
    """sample() and `cpixelcnn sample` both default to method='auto' (the cached sampler where it runs)."""
    import inspect

    from cpixelcnn.cli import build_parser

    assert inspect.signature(sample).parameters["method"].default == "auto"
    assert build_parser().parse_args(["sample", "--checkpoint", "r", "--out", "x.png"]).method == "auto"


def test_sampling_is_reproducible_and_batch_independent():
    model = tiny_model()
    labels = torch.tensor([2, 1, 0])
    a = sample(model, labels, image_size=(4, 4), generator=torch.Generator().manual_seed(5))
    b = sample(model, labels, image_size=(4, 4), generator=torch.Generator().manual_seed(5))
    c = sample(model, labels[:2], image_size=(4, 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(a[:2], c)


def test_sampling_restores_training_mode_and_unconditional_batch():
    model = tiny_model(num_classes=0)
    model.train()
    x = sample(model, None, image_size=(3, 3), batch_size=2)
    assert model.training
    assert x.shape == (2, 3, 3, 3)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(method="fast"), ValueError, "method"),
        (dict(image_size=(0, 4)), ValueError, "positive"),
        (dict(image_size="big"), ValueError, "image_size"),
        (dict(labels=torch.tensor([0, 9])), ValueError, "labels must lie"),
        (dict(labels=torch.tensor([[0]])), ValueError, r"shape \(B,\)"),
        (dict(labels=[0, 1]), TypeError, "integer tensor"),
    ],
)
def test_sample_bad_inputs(kwargs, error, message):
    model = tiny_model()
    args = dict(labels=torch.tensor([0]), image_size=(2, 2))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        sample(model, **args)


def test_unconditional_needs_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        sample(tiny_model(num_classes=0), None, image_size=(2, 2))


@pytest.mark.skipif(not cpixelcnn.extension_available(), reason="compiled extension not built")
@pytest.mark.parametrize("c,bits", [(1, 8), (3, 8), (3, 4), (1, 1)])
def test_compiled_pixel_sampler_matches_reference(c, bits):
    from cpixelcnn._extension import require_extension

    ext = require_extension("test")
    gen = torch.Generator().manual_seed(c * 100 + bits)
    n, k = 5000, 5
    params = torch.randn(n, (10 if c == 3 else 3) * k, generator=gen, dtype=torch.float64) * 3
    noise = torch.rand(n, 1 + c, generator=gen, dtype=torch.float64)
    assert torch.equal(ext.sample_pixel(params, noise, c, bits), sample_pixel(params, noise, c, bits))


def test_extension_is_built_in_ci():
    """CI proves the C++ build path: the extension must have been compiled there."""
    if os.environ.get("CI") != "true":
        pytest.skip("only enforced in CI")
    assert cpixelcnn.extension_available(), cpixelcnn._extension.IMPORT_ERROR


def test_missing_extension_message(monkeypatch):
    from cpixelcnn import _extension

    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "IMPORT_ERROR", "No module named 'cpixelcnn._C'")
    with pytest.raises(RuntimeError, match=r"needs the compiled extension .*--no-build-isolation"):
        _extension.require_extension("the cached sampler")


def test_one_sampler_vocabulary_method_and_engine():
    """method (naive | cached | auto) x engine (every registered one | auto), both from sample()."""
    from cpixelcnn._extension import extension_available
    from cpixelcnn.sampling import METHODS
    from cpixelcnn.sampling.engines import ENGINES, engine_choices

    assert METHODS == ("auto", "naive", "cached") and engine_choices() == ("auto", *ENGINES)
    model, labels = tiny_model(), torch.tensor([0, 3])
    with pytest.raises(ValueError, match="method='naive' has no engine"):
        sample(model, labels, (3, 4), method="naive", engine="cpu")
    with pytest.raises(ValueError, match="engine must be one of"):
        sample(model, labels, (3, 4), method="cached", engine="gpu")
    with pytest.raises(ValueError, match="method must be one of 'auto', 'naive', 'cached'"):
        sample(model, labels, (3, 4), method="fast")
    if not extension_available():
        pytest.skip("the compiled extension is not built")
    draw = lambda **kw: sample(model, labels, (3, 4), generator=torch.Generator().manual_seed(5), **kw)  # noqa: E731
    naive = draw(method="naive")
    for kw in ({"method": "cached", "engine": "cpu"}, {"method": "auto", "engine": "cuda-emulated"}, {"method": "cached"}):
        assert torch.equal(draw(**kw), naive), kw
    with pytest.raises(RuntimeError, match="needs a CUDA model"):
        draw(method="cached", engine="cuda")


def test_per_class_samples_are_the_per_class_rows_of_one_draw(tmp_path):
    from cpixelcnn.sampling import per_class_samples, write_sample_grid

    model = tiny_model(num_classes=3)
    images = per_class_samples(model, 2, 4, seed=7, method="naive")
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(images, sample(model, labels, (4, 4), method="naive", generator=torch.Generator().manual_seed(7)))
    assert per_class_samples(model, 2, (4, 5), classes=[1], method="naive").shape == (2, 3, 4, 5)
    path, grid_images = write_sample_grid(tmp_path / "g.png", model, 2, 4, seed=7, scale=1, method="naive")
    assert torch.equal(grid_images, images) and path.is_file()
    from PIL import Image

    assert Image.open(path).size == (2 * 6 + 2, 3 * 6 + 2)  # 2 per row, 3 rows (one per class), 2-pixel padding
    unconditional = per_class_samples(tiny_model(num_classes=0), 3, 4, method="naive")
    assert unconditional.shape == (3, 3, 4, 4)
    with pytest.raises(ValueError, match="samples per class"):
        per_class_samples(model, 0, 4)
