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


def test_uint8_images_and_grid_images_are_one_convention():
    """The data sets' uint8 images and the model-range floats give the same answer, on the host."""
    model = tiny_model(num_classes=3)  # float64
    images = torch.randint(0, 256, (4, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    predicted, loglik = classify(model, images, max_batch=5)
    predicted_f, loglik_f = classify(model, images.double() / 127.5 - 1.0)
    assert torch.allclose(loglik, loglik_f, rtol=1e-12, atol=0) and torch.equal(predicted, predicted_f)
    assert loglik.device.type == "cpu" and loglik.dtype == torch.float64
    with pytest.raises(ValueError, match="channels"):
        classify(model, images[:, :1])
    with pytest.raises(ValueError, match="off the 5-bit grid"):  # 8-bit data on a 5-bit model is quantized first, as for float input
        classify(tiny_model(num_classes=3, bits=5), torch.full((1, 3, 4, 5), 1, dtype=torch.uint8))


def test_classify_dataset_and_its_predictions_file():
    from cpixelcnn.classifier import classify_dataset, predictions_csv
    from cpixelcnn.data import Dataset

    model = tiny_model(num_classes=3)
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labelled = Dataset(images, torch.tensor([0, 1, 2, 0, 1]), ["a", "b", "c"], layout="folders")
    predicted, loglik, report = classify_dataset(model, labelled, batch_size=2)
    assert torch.equal(predicted, classify(model, images)[0]) and report["n"] == 5 and sum(map(sum, report["confusion_matrix"])) == 5
    lines = predictions_csv(labelled, predicted, loglik, ["a", "b", "c"]).splitlines()
    assert lines[0] == "file,predicted,class,true,true_class,loglik_a,loglik_b,loglik_c" and len(lines) == 6
    assert lines[2].split(",")[3:5] == ["1", "b"]  # the true label beside the prediction
    unlabelled = Dataset(images, torch.full((5,), -1), ["a", "b", "c"], layout="course")
    assert classify_dataset(model, unlabelled)[2] is None
    assert predictions_csv(unlabelled, predicted, loglik, ["a", "b", "c"]).splitlines()[0] == f"0000000,{int(predicted[0])}"
    with pytest.raises(ValueError, match="unconditional"):
        classify_dataset(tiny_model(num_classes=0), labelled)
