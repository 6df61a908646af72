"""openai/pixel-cnn's TensorFlow checkpoints imported without TensorFlow (cpixelcnn.tf_checkpoint,
cpixelcnn.openai_import): outputs equal the original code's on checkpoints it wrote itself
(tests/data/openai/, made as tests/data/openai/README.md says), with the averaged weights and the
raw ones, unconditional and class-conditional; the likelihoods agree but where openai's loss
approximates; every command runs on an imported run; bad checkpoints are one line each."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cpixelcnn import dmol_log_prob
from cpixelcnn.cli import main
from cpixelcnn.openai_import import OpenAIImportError, expected_shapes, import_openai, layer_order
from cpixelcnn.tf_checkpoint import CheckpointError, crc32c, read_index, read_tensors, unmask

DATA = Path(__file__).parent / "data" / "openai"
CONFIGS = sorted(p.name for p in DATA.iterdir() if (p / "params.ckpt.index").is_file())
TOLERANCE = 1e-5  # relative, of the network's outputs (openai's float32 against ours in float64)


def _reference(name):
    return np.load(DATA / name / "reference.npz")


def _inputs(ref):
    x = torch.from_numpy(ref["images"]).permute(0, 3, 1, 2).double() / 127.5 - 1
    labels = torch.from_numpy(ref["labels"]).long()
    return x, labels


def test_the_fixtures_cover_both_models_in_two_sizes():
    assert {c.split("-")[0] for c in CONFIGS} == {"uncond", "cond"} and len(CONFIGS) == 4, CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("ema", [True, False], ids=["ema", "raw"])
def test_imported_outputs_equal_the_originals(name, ema):
    ref = _reference(name)
    model, info = import_openai(DATA / name / "params.ckpt", ema=ema)
    x, labels = _inputs(ref)
    with torch.no_grad():
        out = model.double()(x, labels if model.num_classes else None).permute(0, 2, 3, 1).numpy()
    want = ref["out_ema" if ema else "out_raw"]
    assert out.shape == want.shape and info["ema"] is ema
    assert np.abs(out - want).max() <= TOLERANCE * np.abs(want).max(), np.abs(out - want).max() / np.abs(want).max()
    other = ref["out_raw" if ema else "out_ema"]
    assert np.abs(out - other).max() > 100 * TOLERANCE * np.abs(other).max()  # the averages are not the raw weights


def _log_softmax(v: np.ndarray) -> np.ndarray:
    top = v.max(-1, keepdims=True)
    return v - top - np.log(np.exp(v - top).sum(-1, keepdims=True))


def openai_style_nll(x: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-log p per image as openai's loss computes it (NHWC, 3 channels), float64: its edge cases at
    x < -0.999 / x > 0.999, and a bin whose probability is below 1e-5 taken as the density at its
    centre times the bin width. Written from the paper's description, for comparison only."""
    k = params.shape[-1] // 10
    logits, rest = params[..., :k], params[..., k:].reshape(*x.shape, 3 * k)
    means, log_scales, coeffs = rest[..., :k], np.maximum(rest[..., k : 2 * k], -7.0), np.tanh(rest[..., 2 * k :])
    xe = x[..., None]
    m = means.copy()
    m[..., 1, :] += coeffs[..., 0, :] * xe[..., 0, :]
    m[..., 2, :] += coeffs[..., 1, :] * xe[..., 0, :] + coeffs[..., 2, :] * xe[..., 1, :]
    centred, inv = xe - m, np.exp(-log_scales)
    plus, minus = inv * (centred + 1 / 255), inv * (centred - 1 / 255)
    softplus = lambda v: np.logaddexp(0, v)  # noqa: E731
    cdf_delta = 1 / (1 + np.exp(-plus)) - 1 / (1 + np.exp(-minus))
    mid = inv * centred
    log_mid = mid - log_scales - 2 * softplus(mid) - np.log(127.5)
    inner = np.where(cdf_delta > 1e-5, np.log(np.maximum(cdf_delta, 1e-12)), log_mid)
    log_probs = np.where(xe < -0.999, plus - softplus(plus), np.where(xe > 0.999, -softplus(minus), inner))
    log_probs = log_probs.sum(axis=3) + _log_softmax(logits)
    top = log_probs.max(-1, keepdims=True)
    per_pixel = top[..., 0] + np.log(np.exp(log_probs - top).sum(-1))
    return -per_pixel.sum(axis=(1, 2)), cdf_delta


@pytest.mark.parametrize("name", CONFIGS)
def test_log_likelihoods_agree_where_openais_loss_is_exact(name):
    """openai's per-image loss equals its formula on our outputs; ours is the exact likelihood, which
    differs from it only by its approximation of bins below 1e-5 (and float32 rounding)."""
    ref = _reference(name)
    model, _ = import_openai(DATA / name / "params.ckpt", ema=True)
    x, labels = _inputs(ref)
    with torch.no_grad():
        params = model.double()(x, labels if model.num_classes else None)
        exact = -dmol_log_prob(x, params).numpy()
    nhwc = params.permute(0, 2, 3, 1).numpy()
    theirs, cdf_delta = openai_style_nll(x.permute(0, 2, 3, 1).numpy(), nhwc)
    assert np.allclose(theirs, ref["nll_ema"], rtol=1e-5), (theirs, ref["nll_ema"])  # their formula, our outputs: their numbers
    xe = x.permute(0, 2, 3, 1).numpy()[..., None]
    approximated = ((cdf_delta <= 1e-5) & (xe >= -0.999) & (xe <= 0.999)).any(axis=-1).any(axis=(1, 2, 3))
    for i in range(len(exact)):
        if not approximated[i]:
            assert abs(exact[i] - theirs[i]) <= 1e-6 * abs(theirs[i]), i
    assert np.allclose(exact, ref["nll_ema"], rtol=2e-3)


def test_the_variables_mapped_are_every_layer_of_model_spec():
    order = layer_order(1, conditional=True)
    scopes = [scope for scope, _, _ in order]
    assert scopes[:4] == ["model/conv2d_0", "model/conv2d_1", "model/conv2d_2", "model/conv2d_3"]
    assert scopes[-1] == "model/dense_" + str(sum(1 for _, _, k in order if k == "dense") - 1)
    assert sum(1 for _, _, k in order if k == "cond") == 2 * (3 + 2 + 3)  # every gated resnet of both streams
    index, entries = read_index(DATA / "cond-1-8-2" / "params.ckpt")
    shapes = expected_shapes(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, in_channels=3, num_classes=3)
    assert all(list(entries[name]["shape"]) == shape for name, shape in shapes.items())
    assert all(name + "/ExponentialMovingAverage" in entries for name in shapes)


def test_the_bundle_reader_checks_every_tensor():
    prefix = DATA / "uncond-1-8-2" / "params.ckpt"
    tensors = read_tensors(prefix)
    _, entries = read_index(prefix)
    assert set(tensors) == {n for n, e in entries.items() if e["dtype"] in (1, 2, 3, 9)}
    raw = (DATA / "uncond-1-8-2" / "params.ckpt.data-00000-of-00001").read_bytes()
    entry = entries["model/conv2d_0/V"]
    assert crc32c(raw[entry["offset"] : entry["offset"] + entry["size"]]) == unmask(entry["crc"])
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value


def test_the_compiled_crc_is_the_pythons():
    from cpixelcnn._extension import _C

    if _C is None or not hasattr(_C, "crc32c"):
        pytest.skip("the compiled extension is not built")

    data = np.random.default_rng(0).integers(0, 256, 10_007, dtype=np.uint8).tobytes()
    python = _python_crc(data)
    assert _C.crc32c(data) == python and _C.crc32c(data[5000:], _C.crc32c(data[:5000])) == python


def _python_crc(data: bytes) -> int:
    import cpixelcnn.tf_checkpoint as tfc

    crc = 0xFFFFFFFF
    for byte in data:
        crc = tfc._TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- every command on an imported run --------------------------------------------------------------------


def test_an_imported_run_works_with_every_command(tmp_path, capsys):
    run, cond = tmp_path / "uncond", tmp_path / "cond"
    assert main(["import", str(DATA / "uncond-2-12-3" / "params.ckpt"), "--from", "openai", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "weights: the Polyak averages" in out and "nr_resnet=2 nr_filters=12 nr_logistic_mix=3" in out
    assert main(["evaluate", "--checkpoint", str(run), "--data", "demo", "--split", "test", "--no-cache", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bpd"] > 0
    assert main(["sample", "--checkpoint", str(run), "--n", "2", "--image-size", "8", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["import", str(DATA / "cond-1-8-2" / "params.ckpt.index"), "--from", "openai", "--out", str(cond), "--no-ema",
                 "--class-names", "x,y,z"]) == 0  # fmt: skip
    assert "the raw weights (--no-ema)" in capsys.readouterr().out
    config = json.loads((cond / "config.json").read_text())
    assert config["class_names"] == ["x", "y", "z"] and config["model"]["conditioning"] == "additive"
    assert main(["sample", "--checkpoint", str(cond), "--class", "all", "--n", "1", "--image-size", "8", "--out", str(tmp_path / "c.png")]) == 0
    tree = tmp_path / "tree"
    for i, name in enumerate(("x", "y", "z")):
        (tree / name).mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tree / name / "0.png")
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(cond), "--data", str(tree), "--no-cache", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3


def test_the_imported_model_samples_with_the_cached_sampler_as_with_the_naive_one():
    import cpixelcnn

    model, _ = import_openai(DATA / "uncond-1-8-2" / "params.ckpt")
    naive = cpixelcnn.sample(model, None, image_size=(8, 8), batch_size=2, method="naive", generator=torch.Generator().manual_seed(0))
    cached = cpixelcnn.sample(model, None, image_size=(8, 8), batch_size=2, method="cached", generator=torch.Generator().manual_seed(0))
    assert (naive == cached).float().mean() > 0.99


# -- bad checkpoints: one line each, nothing written --------------------------------------------------


def _copy(tmp_path, name="uncond-1-8-2"):
    folder = tmp_path / name
    shutil.copytree(DATA / name, folder)
    return folder / "params.ckpt"


def _refused(tmp_path, prefix, message, capsys):
    out = tmp_path / "out"
    assert main(["import", str(prefix), "--from", "openai", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cpixelcnn: error:") and message in err, err
    assert not out.exists() or not any(out.iterdir())


def test_a_missing_data_or_index_file_is_one_line(tmp_path, capsys):
    prefix = _copy(tmp_path)
    (prefix.parent / "params.ckpt.data-00000-of-00001").unlink()
    _refused(tmp_path, prefix, "params.ckpt.data-00000-of-00001 does not exist", capsys)
    prefix = _copy(tmp_path, "cond-1-8-2")
    (prefix.parent / "params.ckpt.index").unlink()
    _refused(tmp_path, prefix, "params.ckpt.index does not exist", capsys)


def test_a_truncated_or_damaged_file_is_one_line(tmp_path, capsys):
    prefix = _copy(tmp_path)
    data = prefix.parent / "params.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    _refused(tmp_path, prefix, "truncated", capsys)
    prefix = _copy(tmp_path, "cond-1-8-2")
    data = prefix.parent / "params.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    _, entries = read_index(prefix)
    raw[entries["model/conv2d_0/V/ExponentialMovingAverage"]["offset"] + 3] ^= 0xFF
    data.write_bytes(bytes(raw))
    _refused(tmp_path, prefix, "fails its checksum", capsys)
    index = prefix.parent / "params.ckpt.index"
    index.write_bytes(index.read_bytes()[:-10])
    _refused(tmp_path, prefix, "not a TensorFlow checkpoint index", capsys)


def test_a_checkpoint_of_another_model_or_shape_is_one_line(tmp_path, capsys):
    prefix = _copy(tmp_path)
    with pytest.raises(OpenAIImportError, match="nr_filters=9 was given but the checkpoint's variables say nr_filters=8"):
        import_openai(prefix, nr_filters=9)
    other = tmp_path / "other"
    shutil.copytree(DATA / "cond-2-12-3", other)
    for path in other.iterdir():  # a checkpoint whose variables are another model's: renamed scope
        if path.name.startswith("params.ckpt."):
            path.write_bytes(path.read_bytes().replace(b"model/", b"encod/"))
    with pytest.raises(CheckpointError):
        import_openai(other / "params.ckpt")
    _refused(tmp_path, other / "params.ckpt", "", capsys)


def test_meta_only_and_v1_checkpoints_are_one_line(tmp_path, capsys):
    meta = tmp_path / "meta" / "params.ckpt.meta"
    meta.parent.mkdir()
    meta.write_bytes(b"graph")
    _refused(tmp_path, meta.parent / "params.ckpt", "is a graph without weights", capsys)
    v1 = tmp_path / "v1" / "model.ckpt-1000"
    v1.parent.mkdir()
    v1.write_bytes(b"\x00" * 64)
    _refused(tmp_path, v1, "single-file (V1) TensorFlow checkpoint", capsys)
    _refused(tmp_path, tmp_path / "nothing" / "params.ckpt", "params.ckpt.index does not exist", capsys)
