"""The GPU training-step prediction's counts (benchmarks/predict_gpu.py): one step traced on fake
tensors — the FLOPs are the convolutions' and the fused kernels replace eager element-wise work."""

import pytest

pytest.importorskip("benchmarks.predict_gpu")
from benchmarks.predict_gpu import forward_macs, step_traffic  # noqa: E402


def test_a_traced_step_counts_convolution_flops_and_the_fused_kernels_traffic():
    eager = step_traffic("eager", arch=(1, 8, 3), batch=2, size=8)
    triton = step_traffic("triton", arch=(1, 8, 3), batch=2, size=8)
    from cpixelcnn import ConditionalPixelCNN

    forward_flop = 2 * forward_macs(ConditionalPixelCNN(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, num_classes=4, dropout=0.0), 8, 8, 2)
    # forward + backward: 3 forwards, less the gradients of the image input (first layers), plus the FiLM heads' products
    assert 2.5 * forward_flop < eager["flop"] < 3.3 * forward_flop
    assert eager["flop"] == triton["flop"] and eager["matmul_kernels"] == triton["matmul_kernels"] > 0
    assert eager["fused_kernels"] == 0 and triton["fused_kernels"] > 0  # gated-FiLM and DMoL, forward and backward
    assert triton["other_kernels"] < eager["other_kernels"] and triton["other_bytes"] + triton["fused_bytes"] < eager["other_bytes"]
    assert triton["matmul_bytes"] == eager["matmul_bytes"]


def test_committed_predictions_cover_every_op():
    """The committed GPU predictions hold every registered op's cases as its benchmark gives them
    today (python -m benchmarks.predict_gpu rewrites them)."""
    import json
    from pathlib import Path

    from benchmarks.predict_gpu import kernel_predictions

    committed = json.loads((Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "gpu-prediction.json").read_text())["kernels"]
    assert committed == kernel_predictions()
