"""Device choice (cuda → mps → cpu) and the float64 rule for devices without float64 (Apple GPUs).

No Apple GPU is available here, so the rule is tested with a guard: the model's device (the CPU)
is declared float64-less, and a dispatch mode fails every float64 tensor created outside the
package's marked float64 sections while the samplers, the classifier and evaluation run."""

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import cpixelcnn.devices as devices
from cpixelcnn.cli import main
from cpixelcnn.devices import float64_math, in_float64_math, resolve_device
from cpixelcnn.rundir import save_run


class Float64Guard(TorchDispatchMode):
    """Records every float64 tensor an op allocates on ``device`` outside :func:`float64_math`
    (views and in-place results share an input's storage: not allocations)."""

    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)
        self.violations = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not in_float64_math():
            inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            for t in tree_leaves(out):
                if (
                    isinstance(t, torch.Tensor)
                    and t.dtype == torch.float64
                    and t.device == self.device
                    and t.untyped_storage().data_ptr() not in inputs
                ):
                    where = next(
                        (f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(traceback.extract_stack()) if "/cpixelcnn/" in f.filename),
                        "?",
                    )
                    self.violations.append(f"{func} at {where}")
        return out


@pytest.fixture
def cpu_without_float64(monkeypatch):
    monkeypatch.setattr(devices, "WITHOUT_FLOAT64", {"cpu"})
    assert not devices.supports_float64("cpu")


@pytest.fixture
def run_dir(tmp_path):
    from cpixelcnn import ConditionalPixelCNN

    torch.manual_seed(0)
    model = ConditionalPixelCNN(nr_resnet=1, nr_filters=6, nr_logistic_mix=2, num_classes=4, dropout=0.0)
    with torch.no_grad():  # labels that matter
        for name, p in model.named_parameters():
            if "cond_head" in name:
                p.normal_(0, 0.3)
    return save_run(tmp_path / "run", model, ["stripes", "checker", "disc", "diagonal"], extra={"train": {"image_size": 8}})


def test_the_guard_catches_a_float64_tensor_on_the_device(cpu_without_float64):
    with Float64Guard("cpu") as guard:
        torch.ones(3).double()  # what the classifier did before the rule: .double() on the model's device
        with float64_math():
            torch.zeros(2, dtype=torch.float64)
    assert len(guard.violations) == 1 and "_to_copy" in guard.violations[0]


def test_no_float64_on_a_device_without_it(cpu_without_float64, run_dir, tmp_path, capsys):
    from cpixelcnn import load_run, sample
    from cpixelcnn.classifier import class_log_likelihoods, classify
    from cpixelcnn.data import load_dataset, to_model_range
    from cpixelcnn.metrics import dataset_bpd

    model, _ = load_run(run_dir)
    images = load_dataset("demo", "validation", 8).images[:6]
    labels = torch.arange(4)
    with Float64Guard("cpu") as guard:
        for method in ("naive", "auto"):
            drawn = sample(model, labels, image_size=(8, 8), method=method, generator=torch.Generator().manual_seed(1))
            completed = sample(model, labels, image_size=(8, 8), method=method, generator=torch.Generator().manual_seed(1),
                               prefix=to_model_range(images[:4]).float(), prefix_pixels=20)  # fmt: skip
            assert drawn.dtype == completed.dtype == torch.float32
        loglik = class_log_likelihoods(model, to_model_range(images).float())
        predicted, _ = classify(model, images)
        bpd = dataset_bpd(model, images, torch.zeros(6, dtype=torch.long))
        for argv in (
            ["classify", "--split", "validation"],
            ["evaluate", "--split", "validation"],
            ["complete", "--rows", "3", "--n", "2", "--out", str(tmp_path / "c.png")],
        ):
            assert main([argv[0], "--checkpoint", str(run_dir), "--device", "cpu", "--data", "demo", *argv[1:]]) == 0
        assert main(["sample", "--checkpoint", str(run_dir), "--device", "cpu", "--n", "1", "--out", str(tmp_path / "s.png")]) == 0
    assert guard.violations == []
    assert loglik.dtype == torch.float64 and loglik.device == devices.HOST and predicted.shape == (6,) and 0 < bpd < 16
    # the same numbers as with float64 on the device
    devices.WITHOUT_FLOAT64.clear()
    assert torch.equal(class_log_likelihoods(model, to_model_range(images).float()), loglik)
    assert dataset_bpd(model, images, torch.zeros(6, dtype=torch.long)) == bpd
    assert torch.equal(sample(model, labels, image_size=(8, 8), method="naive", generator=torch.Generator().manual_seed(1)), drawn)


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") and resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize(
    "name,message", [("mps", "no Apple GPU"), ("cuda", "no CUDA device"), ("tpu", "is not a device"), ("gpu0", "is not a device")]
)
def test_unavailable_devices_are_one_line_errors(name, message, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        resolve_device(name)
    assert main(["train", "--data", "demo", "--out", str(tmp_path / "r"), "--device", name, "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
