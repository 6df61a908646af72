"""Run directories: ``config.json`` (model config, class names) + ``checkpoint.safetensors``.

Weights are stored with safetensors (no pickle: loading a checkpoint cannot run code). Optimizer
and step state for resuming training live in ``training_state.pt`` beside them (written by the
trainer). Every file is written to a temp file and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from cpixelcnn.io import atomic_write_bytes, atomic_write_json
from cpixelcnn.model import ConditionalPixelCNN

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "checkpoint.safetensors"
EMA_NAME = "ema.safetensors"  # Polyak-averaged weights (training with --ema)
FORMAT_VERSION = 1


def save_run(run_dir: str | os.PathLike, model: ConditionalPixelCNN, class_names: list[str] | None = None, extra: dict | None = None) -> Path:
    """Write ``model``'s config and weights into ``run_dir`` (created if needed)."""
    run_dir = Path(run_dir)
    if class_names is not None and model.num_classes and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    save_weights(run_dir / WEIGHTS_NAME, model.state_dict())
    config = {"format_version": FORMAT_VERSION, "model": model.config, "class_names": class_names or [f"Class{i}" for i in range(model.num_classes)]}
    if extra:
        config.update(extra)
    atomic_write_json(run_dir / CONFIG_NAME, config)
    return run_dir


def read_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a cpixelcnn run directory (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path} has no 'model' section")
    return config


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> Path:
    """A state dict as safetensors, atomically. Refuses (ValueError naming the tensor) weights with
    NaN or inf: a diverged model must never replace a good checkpoint."""
    from safetensors.torch import save

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"refusing to save {Path(path).name}: tensor {name!r} has non-finite values (NaN or inf)")

    return atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))


def load_run(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu", use_ema: bool = True) -> tuple[ConditionalPixelCNN, dict]:
    """Rebuild the model of a run directory with its weights. Returns (model in eval mode, config).

    With ``use_ema`` (default) the Polyak-averaged weights are used when the run has them, as
    PixelCNN++ does for evaluation and sampling; ``config["weights"]`` says which were loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(run_dir)
    weights = Path(run_dir) / WEIGHTS_NAME
    if use_ema and (Path(run_dir) / EMA_NAME).is_file():
        weights = Path(run_dir) / EMA_NAME
    config["weights"] = weights.name
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir} has no {WEIGHTS_NAME}")
    try:
        model = ConditionalPixelCNN(**config["model"])
    except TypeError as err:
        raise ValueError(f"{run_dir}/{CONFIG_NAME}: bad model config ({err})") from None
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} cannot be read: {err}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: keep the first line torch gives
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).splitlines()[0])
        raise ValueError(f"{weights} does not fit the config: {detail}") from None
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ValueError(f"{weights} does not fit the config: {'missing' if missing else 'unexpected'} tensor {first!r}")
    return model.to(map_location).eval(), config
