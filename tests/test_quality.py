"""Classification quality guard, in the spirit of Liger-Kernel's convergence tests: a fixed small
budget on real images that ship with scikit-learn (handwritten digits, 10 classes), several seeds,
thresholds on the mean and the worst held-out Bayes accuracy set from measurements. A change that
silently costs classification quality (the model, the loss, dropout, the optimizer, averaging,
data handling) fails here.

The recipe is benchmarks/quality_digits.py's (1/32/5, batch 32, lr 2e-3, 300 steps, the CLI's
defaults otherwise — dropout 0.5); its measurement over seeds 0-4 is the results file every
published digits accuracy is rendered from. The thresholds sit about one standard deviation of a
seed below the measured worst and mean.
"""

import pytest

pytest.importorskip("sklearn")

from benchmarks.quality_digits import RECIPE, RESULT, held_out_accuracy  # noqa: E402  (one recipe: the guard's and the published figure's)
from cpixelcnn.training import TrainConfig, train  # noqa: E402

SEEDS = (0, 1, 2)
QUALITY_FLOOR = {"mean": 0.97, "worst": 0.96}  # about one seed's standard deviation below the results file's mean and worst (seeds 0-4)


@pytest.mark.quality  # CI runs it once, on the pinned torch (it measures training, not the build)
def test_short_runs_classify_real_digits_well_for_every_seed(tmp_path):
    accuracies = []
    for seed in SEEDS:
        run = tmp_path / f"seed{seed}"
        train(TrainConfig(out=str(run), seed=seed, **RECIPE), log=lambda *a: None)
        accuracies.append(held_out_accuracy(run))  # what classify uses: the averaged weights when the run keeps them
    mean, worst = sum(accuracies) / len(accuracies), min(accuracies)
    report = ", ".join(f"seed {s}: {a:.1%}" for s, a in zip(SEEDS, accuracies))
    assert mean >= QUALITY_FLOOR["mean"] and worst >= QUALITY_FLOOR["worst"], f"held-out accuracy fell: {report} (mean {mean:.1%}, worst {worst:.1%})"


def test_the_published_figures_are_this_recipes():
    import json

    from benchmarks.common import RESULTS

    payload = json.loads((RESULTS / RESULT).read_text())
    assert payload["recipe"] == RECIPE and payload["summary"]["worst_accuracy"] >= QUALITY_FLOOR["worst"]
