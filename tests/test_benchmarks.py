"""The benchmark scripts stay runnable: smoke mode on CPU checks every variant against the reference."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


OWN_TESTS = {"kernel_resources": "test_kernel_resources.py", "predict_gpu": "test_predict_gpu.py"}  # checked by their own tests


def _smoked() -> list[str]:
    """Every benchmark module of the checkout (found as `cpixelcnn bench` finds them), but those with a test file of their own."""
    from cpixelcnn.commands.bench import benchmark_modules

    return [name for name in benchmark_modules(ROOT) if name not in OWN_TESTS]


def test_every_benchmark_is_smoked_or_has_its_own_test():
    from cpixelcnn.commands.bench import benchmark_modules

    assert set(_smoked()) | set(OWN_TESTS) == set(benchmark_modules(ROOT)) and _smoked()
    assert all((ROOT / "tests" / test).is_file() for test in OWN_TESTS.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", _smoked())
def test_benchmark_smoke(name, tmp_path):
    out = tmp_path / f"{name}.json"
    from cpixelcnn.commands.bench import benchmark_modules

    module = f"benchmarks.{benchmark_modules(ROOT)[name].stem}"
    proc = subprocess.run([sys.executable, "-m", module, "--smoke", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke" and result["device_info"]["torch"]
    if name == "sampling":
        assert all(row["identical_pixels"] == 1.0 for row in result["rows"])
    elif name == "conditional_vs_per_class":  # both approaches through the CLI, per seed, with mean and worst
        assert {(row["method"], row["seed"]) for row in result["rows"]} == {(m, s) for m in ("conditional", "per-class") for s in (0, 1)}
        assert all(0 <= row["accuracy"] <= 1 and 0 < row["test_bpd"] < 16 and row["n_test"] > 0 for row in result["rows"])
        for s in result["summary"]:
            accs = [r["accuracy"] for r in result["rows"] if (r["dataset"], r["steps"], r["method"]) == (s["dataset"], s["steps"], s["method"])]
            assert s["seeds"] == 2 and s["worst_accuracy"] == min(accs) and abs(s["mean_accuracy"] - sum(accs) / 2) < 1e-12
        assert len(result["verdicts"]) == 1 and result["verdicts"][0]["accuracy_winner"] in ("conditional", "per-class", "tie")
        assert result["speed"]["step"]["unconditional_s"] > 0 and result["speed"]["per_class"]["by_hand_s"] > 0
    elif name == "ood":
        assert {(r["in_set"], r["out_set"]) for r in result["rows"]} == {(i, o) for i, outs in bench_ood_tasks().items() for o in outs}
        assert all(0 <= r["auroc_bpd"] <= 1 and 0 <= r["auroc_llr"] <= 1 for r in result["rows"]) and len(result["summary"]) == 6
    elif name == "photo_task":
        assert [r["seed"] for r in result["rows"]] == [0, 1] and all(r["steps"] == 3 for r in result["rows"])
        for key in ("raw_accuracy", "averaged_accuracy", "cnn_accuracy"):  # the CLI's default averaging is on: both weights are classified
            values = [r[key] for r in result["rows"]]
            assert all(0 <= v <= 1 for v in values) and result["summary"][f"worst_{key}"] == min(values)
            assert abs(result["summary"][f"mean_{key}"] - sum(values) / 2) < 1e-12 and result["summary"]["seeds"] == 2
    elif name == "data":  # a folder and the npz layout, cold and warm, through `cpixelcnn train`
        cached = [r for r in result["rows"] if r["loader"] == "cached"]
        assert [r["set"] for r in cached] == ["folders-2k-32px", "imagenet32-npz-0.00M"]
        assert all(r["cold_s"] > 0 and r["warm_s"] > 0 and r["peak_rss_mb"] > 0 and 0 <= r["data_share"] < 1 for r in cached)
        assert result["summary"]["imagenet_images"] == 2400
    elif name == "quality_digits":  # the guard's recipe, cut to 3 steps: a held-out accuracy for seed 0
        assert [r["seed"] for r in result["rows"]] == [0] and 0 <= result["summary"]["worst_accuracy"] <= 1
    elif name == "checkpoint_activations":
        assert [row["checkpoint_activations"] for row in result["rows"]] == [False, True] and result["summary"]["identical_float64"]
        assert result["summary"]["saved_activation_ratio"] <= 0.5
    else:
        assert {row["variant"] for row in result["rows"]} >= {"eager", "triton"}


def bench_ood_tasks():
    from benchmarks.bench_ood import TASKS

    return TASKS


def test_over_seeds_groups_rows_in_first_seen_order_with_mean_and_worst():
    from benchmarks.common import over_seeds

    rows = [dict(data="b", seed=0, acc=0.9, bpd=3.0), dict(data="a", seed=0, acc=0.5, bpd=4.0),
            dict(data="b", seed=1, acc=0.7, bpd=5.0), dict(data="a", seed=1, acc=0.75, bpd=2.0), dict(data="b", seed=2, acc=0.8, bpd=1.0)]  # fmt: skip
    summary = over_seeds(rows, ("data",), best_of=("acc",), mean_of=("bpd",))
    assert [s["data"] for s in summary] == ["b", "a"] and [s["seeds"] for s in summary] == [3, 2]
    assert summary[0]["worst_acc"] == 0.7 and abs(summary[0]["mean_acc"] - 0.8) < 1e-12 and summary[0]["mean_bpd"] == 3.0
    assert summary[1]["worst_acc"] == 0.5 and summary[1]["mean_acc"] == 0.625 and "worst_bpd" not in summary[1]
    (everything,) = over_seeds(rows, (), best_of=("acc",))
    assert everything == dict(seeds=5, mean_acc=sum(r["acc"] for r in rows) / 5, worst_acc=0.5)


def test_conditional_vs_per_class_photos_are_the_photo_task():
    """--data photos: bench_photo_task's checkerboard patches, train and test regions disjoint."""
    from benchmarks.bench_conditional_vs_per_class import _load
    from benchmarks.bench_photo_task import PHOTOS

    train, test = _load("photos")
    assert tuple(train.images.shape) == (1200, 3, 16, 16) and tuple(test.images.shape) == (240, 3, 16, 16)
    assert train.class_names == list(PHOTOS) and test.class_names == list(PHOTOS)
    assert train.labels.bincount().tolist() == [300] * 4 and test.labels.bincount().tolist() == [60] * 4
    seen = {bytes(img.numpy()) for img in train.images}
    repeated = [img for img in test.images if bytes(img.numpy()) in seen]
    assert all(img.min() == img.max() for img in repeated)  # only flat patches (the astronaut's black border) recur
