"""Likelihood maps, per-image scores, likelihood ratios and AUROC (cpixelcnn.scoring), and the
evaluate --heatmap / score commands."""

import csv
import io
import json
import math

import pytest
import torch

from cpixelcnn.classifier import class_log_likelihoods, classify
from cpixelcnn.cli import main
from cpixelcnn.data import mutate
from cpixelcnn.ops.dmol import dmol_log_prob
from cpixelcnn.scoring import auroc, pixel_bits, score_images

from helpers import tiny_model


def uint8_images(n, c, h, w, seed=0):
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def in_float64(images):
    """uint8 images on the grid of [-1, 1], computed in float64 as the classifier does for a float64 model."""
    return images.double() / 127.5 - 1.0


def brute_auroc(a, b):
    return sum(1.0 if y > x else 0.5 if y == x else 0.0 for x in a for y in b) / (len(a) * len(b))


def test_auroc_is_the_pairwise_probability_with_ties_halved():
    g = torch.Generator().manual_seed(0)
    for n_in, n_out in ((1, 1), (5, 9), (40, 13)):
        a = torch.randint(0, 6, (n_in,), generator=g).double().tolist()  # many ties
        b = (torch.randint(0, 6, (n_out,), generator=g) + 1).double().tolist()
        assert auroc(a, b) == pytest.approx(brute_auroc(a, b), abs=1e-12)
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0 and auroc([1, 1], [1]) == 0.5
    with pytest.raises(ValueError, match="at least one score"):
        auroc([], [1.0])


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_bits_sum_to_the_images_bits(channels):
    model = tiny_model(in_channels=channels)
    images, labels = uint8_images(3, channels, 5, 6), torch.tensor([0, 2, 3])
    bits = pixel_bits(model, images, labels, batch_size=2)
    assert bits.shape == (3, 5, 6) and bits.dtype == torch.float64 and (bits > 0).all()
    whole = -dmol_log_prob(in_float64(images), model(in_float64(images), labels)) / math.log(2)
    torch.testing.assert_close(bits.sum((1, 2)), whole, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="needs a label per image"):
        pixel_bits(model, images, None)


def test_scores_of_a_conditional_model_and_the_likelihood_ratio():
    model, background = tiny_model(), tiny_model(nr_filters=5)
    images = uint8_images(4, 3, 4, 4, seed=1)
    scores = score_images(model, images, background=background, batch_size=3)
    per_class = class_log_likelihoods(model, in_float64(images))
    dims = images[0].numel()
    expected_bpd = -(torch.logsumexp(per_class, 1) - math.log(4)) / (dims * math.log(2))
    torch.testing.assert_close(torch.tensor(scores["bpd"], dtype=torch.float64), expected_bpd, rtol=1e-12, atol=1e-12)
    assert scores["bayes_class"] == per_class.argmax(1).tolist()
    top2 = per_class.topk(2, 1).values
    torch.testing.assert_close(torch.tensor(scores["margin_nats"], dtype=torch.float64), top2[:, 0] - top2[:, 1])
    for bpd, bg, llr in zip(scores["bpd"], scores["background_bpd"], scores["llr_bpd"]):
        assert llr == pytest.approx(bg - bpd, abs=1e-12)
    with pytest.raises(ValueError, match="background model takes 1-channel"):
        score_images(model, images, background=tiny_model(in_channels=1))


def test_scores_of_an_unconditional_model():
    model = tiny_model(num_classes=0)
    images = uint8_images(2, 3, 4, 4)
    scores = score_images(model, images)
    assert set(scores) == {"bpd"}
    lp = dmol_log_prob(in_float64(images), model(in_float64(images), None))
    torch.testing.assert_close(torch.tensor(scores["bpd"], dtype=torch.float64), -lp / (48 * math.log(2)))


def test_mutation_replaces_values_at_its_rate():
    images = torch.full((64, 3, 16, 16), 7, dtype=torch.uint8)
    assert torch.equal(mutate(images, 0.0, torch.Generator().manual_seed(0)), images)
    changed = (mutate(images, 0.25, torch.Generator().manual_seed(0)) != images).double().mean().item()
    assert abs(changed - 0.25 * 255 / 256) < 0.01


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    tiny = ["--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "8", "--max-steps", "2"]
    assert main(["train", "--data", "demo", "--out", str(root / "model"), *tiny]) == 0
    assert main(["train", "--data", "demo", "--out", str(root / "background"), "--mutation-rate", "0.2", *tiny]) == 0
    return root


def test_evaluate_writes_a_likelihood_map(two_runs, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "map.png"
    assert main(["evaluate", "--checkpoint", str(two_runs / "model"), "--data", "demo", "--heatmap", str(out), "--heatmap-n", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["heatmap"] == str(out)
    with Image.open(out) as img:
        assert img.height > img.width  # three rows of (image | map)
    with pytest.raises(SystemExit) as refused:  # --heatmap-n's own bounds, checked while parsing
        main(["evaluate", "--checkpoint", str(two_runs / "model"), "--data", "demo", "--heatmap", str(tmp_path / "x.png"), "--heatmap-n", "0"])
    assert refused.value.code == 2 and "--heatmap-n must be >= 1" in capsys.readouterr().err


def test_score_with_a_background_model_as_csv_and_json(two_runs, tmp_path, capsys):
    saved = json.loads((two_runs / "background" / "config.json").read_text())
    assert saved["train"]["mutation_rate"] == 0.2
    args = ["score", "--checkpoint", str(two_runs / "model"), "--background", str(two_runs / "background"), "--data", "demo", "--split", "test"]
    assert main(args) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 100 and list(rows[0]) == ["file", "label", "bpd", "bayes_class", "class_bpd", "margin_nats", "background_bpd", "llr_bpd"]
    assert rows[0]["bayes_class"] in ("stripes", "checker", "disc", "diagonal")
    out = tmp_path / "scores.csv"
    assert main([*args, "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 100 and "mean_llr_bpd" in result["summary"] and len(out.read_text().splitlines()) == 101
    assert result["rows"][0]["llr_bpd"] == pytest.approx(result["rows"][0]["background_bpd"] - result["rows"][0]["bpd"])


def test_score_and_classify_name_the_same_class_on_a_per_class_model_with_unequal_priors():
    """score's Bayes class and margin follow classify's rule, argmax_c log p_c(x) + log π_c: with class
    counts 200 : 10 : 1 the priors overrule the likelihood on some images, and both commands agree there."""
    from cpixelcnn.per_class_model import PerClassPixelCNN

    torch.manual_seed(3)
    members = []
    for k in range(3):
        member = tiny_model(num_classes=0, nr_logistic_mix=2)
        with torch.no_grad():
            for p in member.parameters():
                p.add_(0.05 * (k + 1) * torch.randn_like(p))
        members.append(member)
    model = PerClassPixelCNN(members, [200, 10, 1])
    images = torch.randint(0, 256, (24, 3, 2, 2), dtype=torch.uint8)
    predicted, loglik = classify(model, images)
    scores = score_images(model, images)
    assert scores["bayes_class"] == predicted.tolist()
    assert (loglik.argmax(1) != predicted).any()  # the priors decide some images: the check above is not vacuous
    posterior = loglik + model.class_log_priors
    best2 = posterior.topk(2, dim=1).values
    assert scores["margin_nats"] == pytest.approx((best2[:, 0] - best2[:, 1]).tolist())
