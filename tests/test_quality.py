"""Classification quality guard, in the spirit of Liger-Kernel's convergence tests: a fixed small
budget on real images that ship with scikit-learn (handwritten digits, 10 classes), several seeds,
thresholds on the mean and the worst held-out Bayes accuracy set from measurements. A change that
silently costs classification quality (the model, the loss, dropout, the optimizer, averaging,
data handling) fails here.

Measured with this recipe (1/32/5, batch 32, lr 2e-3, 300 steps, the CLI's defaults otherwise —
dropout 0.5 —, 2-core CPU, seeds 0-4): see QUALITY_FLOOR's comment. The thresholds sit about one
standard deviation of a seed below the measured worst and mean.
"""

import pytest

pytest.importorskip("sklearn")

from cpixelcnn.classifier import classify  # noqa: E402
from cpixelcnn.data import load_dataset  # noqa: E402
from cpixelcnn.rundir import load_run  # noqa: E402
from cpixelcnn.train import TrainConfig, train  # noqa: E402

SEEDS = (0, 1, 2)
RECIPE = dict(data="digits", image_size=8, in_channels=1, nr_resnet=1, nr_filters=32, nr_logistic_mix=5, batch_size=32, lr=2e-3, max_steps=300,
              val_data="none", log_every=1000)  # fmt: skip
QUALITY_FLOOR = {"mean": 0.97, "worst": 0.96}  # measured 2026-12-06, seeds 0-4, torch 2.13 CPU: 98.1-98.9 %, mean 98.4 %, worst 98.1 %


@pytest.mark.quality  # CI runs it once, on the pinned torch (it measures training, not the build)
def test_short_runs_classify_real_digits_well_for_every_seed(tmp_path):
    test = load_dataset("digits", "test", 8, 1)
    accuracies = []
    for seed in SEEDS:
        run = tmp_path / f"seed{seed}"
        train(TrainConfig(out=str(run), seed=seed, **RECIPE), log=lambda *a: None)
        model, _ = load_run(run)  # what classify uses: the averaged weights when the run keeps them
        predicted, _ = classify(model, test.images)
        accuracies.append((predicted == test.labels).double().mean().item())
    mean, worst = sum(accuracies) / len(accuracies), min(accuracies)
    report = ", ".join(f"seed {s}: {a:.1%}" for s, a in zip(SEEDS, accuracies))
    assert mean >= QUALITY_FLOOR["mean"] and worst >= QUALITY_FLOOR["worst"], f"held-out accuracy fell: {report} (mean {mean:.1%}, worst {worst:.1%})"
