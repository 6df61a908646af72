import pytest
import torch

from cpixelcnn import class_log_likelihoods, classify, dmol_log_prob
from helpers import random_grid_images, tiny_model


def test_classify_is_bayes_rule_over_all_classes():
    model = tiny_model(num_classes=3)
    x = random_grid_images(5, 3, 4, 5)
    predicted, loglik = classify(model, x)
    expected = torch.stack([dmol_log_prob(x, model(x, torch.full((5,), c))) for c in range(3)], dim=1)
    assert loglik.shape == (5, 3)
    assert torch.allclose(loglik, expected, rtol=1e-12)
    assert torch.equal(predicted, expected.argmax(1))


def test_chunking_does_not_change_results():
    model = tiny_model(num_classes=4, in_channels=1)
    x = random_grid_images(7, 1, 3, 3)
    _, a = classify(model, x, max_batch=1)
    _, b = classify(model, x, max_batch=5)
    _, c = classify(model, x, max_batch=1000)
    assert torch.allclose(a, b, rtol=1e-12) and torch.allclose(a, c, rtol=1e-12)


def test_classifier_errors():
    with pytest.raises(ValueError, match="class-conditional"):
        classify(tiny_model(num_classes=0), random_grid_images(1, 3, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        classify(tiny_model(), random_grid_images(1, 1, 2, 2))
    with pytest.raises(ValueError, match="max_batch"):
        class_log_likelihoods(tiny_model(), random_grid_images(1, 3, 2, 2), max_batch=0)
    with pytest.raises(ValueError, match="off the 8-bit grid"):
        classify(tiny_model(), torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64))
