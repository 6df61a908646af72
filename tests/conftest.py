"""Fixtures for every test; shared helpers live in helpers.py."""
import os

import torch

if not torch.cuda.is_available():  # run the Triton kernels on CPU tensors (must precede their import)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
