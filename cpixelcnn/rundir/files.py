"""The files of a run (or of one of its checkpoints): ``config.json`` (model config, class names),
``checkpoint.safetensors`` and ``ema.safetensors`` (weights), ``training_state.pt`` (optimizer,
schedule and progress, for resuming) and ``metrics.jsonl``.

Weights are stored with safetensors (no pickle: loading a checkpoint cannot run code); the
training state is read with ``torch.load(weights_only=True)``. Every file but the appended metrics
is written to a temp file and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from cpixelcnn.atomic_io import atomic_write_bytes, atomic_write_json
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.model_config import ModelConfig
from cpixelcnn.rundir.layout import CONFIG_NAME, CURVE_NAME, EMA_NAME, MEMBERS_DIR, METRICS_NAME, SAMPLES_DIR, STATE_NAME, WEIGHTS_NAME

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


MAX_PARAMETERS = 2_000_000_000  # a file describing a bigger model is not a sensible run
MAX_CONFIG_BYTES = 10_000_000


def check_config(config, path) -> dict:
    """A run's config.json, checked before anything is built: required keys and their types, the
    model's settings as ModelConfig bounds them, one class name per class. One-line ValueError otherwise."""
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    model = config.get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path} has no 'model' section")
    architecture = ModelConfig.from_dict(model, str(path))
    try:
        parameters = architecture.parameter_count()
    except ValueError as err:  # settings that do not go together (a one-hot embedding of another size)
        raise ValueError(f"{path}: {err}") from None
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"{path}: the model would have {parameters:,} parameters, more than {MAX_PARAMETERS:,}; the file is not a sensible run")
    names = config.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: 'class_names' must be a list of strings")
    classes = model.get("num_classes", 4)
    if classes and len(names) != classes:
        raise ValueError(f"{path}: {len(names)} class names for a model with {classes} classes")
    if "per_class" in config:
        _check_per_class(config, path)
    for key in ("train", "best"):
        if key in config and not isinstance(config[key], dict):
            raise ValueError(f"{path}: {key!r} must be an object, got {type(config[key]).__name__}")
    if "step" in config and (isinstance(config["step"], bool) or not isinstance(config["step"], int) or config["step"] < 0):
        raise ValueError(f"{path}: 'step' must be an integer >= 0, got {config['step']!r}")
    return config


def _check_per_class(config: dict, path) -> None:
    """A per-class run's section: one member folder (``members/NN``) and one positive count per class."""
    section, names = config["per_class"], config["class_names"]
    if not isinstance(section, dict) or not isinstance(section.get("members"), list) or not isinstance(section.get("class_counts"), list):
        raise ValueError(f"{path}: 'per_class' must be an object with 'members' and 'class_counts' lists")
    members, counts = section["members"], section["class_counts"]
    if not len(members) == len(counts) == len(names) >= 2:
        raise ValueError(
            f"{path}: a per-class run needs one member and one class count per class (at least 2), got {len(members)}, {len(counts)} "
            f"for {len(names)} classes"
        )
    if any(not isinstance(m, str) or m != member_folder(i) for i, m in enumerate(members)):
        raise ValueError(f"{path}: per-class members must be {member_folder(0)}, {member_folder(1)}, ...; got {members[:3]}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        raise ValueError(f"{path}: per-class class counts must be positive integers, got {counts[:8]}")
    if config["model"].get("num_classes", 4) != 0:
        raise ValueError(f"{path}: the members of a per-class run are unconditional (model num_classes 0)")


def member_folder(index: int) -> str:
    """The folder of a per-class run's member ``index``, relative to the run."""
    return f"{MEMBERS_DIR}/{index:02d}"


def save_per_class_config(run_dir: str | os.PathLike, model_config: dict, class_names: list[str], class_counts: list[int], extra: dict) -> Path:
    """A per-class run's config.json: the members' model config, the classes, their members and training counts."""
    members = [member_folder(i) for i in range(len(class_names))]
    config = {
        "format_version": FORMAT_VERSION,
        "model": model_config,
        "class_names": list(class_names),
        "per_class": {"members": members, "class_counts": list(class_counts)},
        **extra,
    }
    check_config(config, Path(run_dir) / CONFIG_NAME)
    return atomic_write_json(Path(run_dir) / CONFIG_NAME, config)


def is_per_class_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a per-class run (its config.json says so)."""
    try:
        return "per_class" in read_config(run_dir)
    except (OSError, ValueError):
        return False


def read_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a cpixelcnn run directory (no {CONFIG_NAME})")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size:,} bytes, too large to be a run's config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON: {str(err).splitlines()[0]}") from None
    return check_config(config, path)


def _check_weights_header(weights: Path, config: dict) -> None:
    """The safetensors header (names, shapes) against the model the config describes, built on the
    meta device: a mismatch is one line before any real tensor is allocated."""
    from safetensors import SafetensorError, safe_open

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ConditionalPixelCNN(**config["model"]).state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, FileNotFoundError) as err:
        raise ValueError(f"{weights} cannot be read: {err}") from None
    for key, shape in expected.items():
        if key not in found:
            raise ValueError(f"{weights} does not fit the config: missing tensor {key!r}")
        if found[key] != shape:
            raise ValueError(f"{weights} does not fit the config: {key} has shape {list(found[key])}, the config needs {list(shape)}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ValueError(f"{weights} does not fit the config: unexpected tensor {extra[0]!r}")


def is_transient(err: BaseException) -> bool:
    """Whether an error reading a file is trouble around it (memory, permissions, I/O, a busy GPU)
    rather than a defect of the file itself: such a file must not be set aside as corrupt."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError))


def non_finite_tensor(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding NaN or inf, else None."""
    return next((name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> Path:
    """A state dict as safetensors, atomically. Refuses (ValueError naming the tensor) weights with
    NaN or inf: a diverged model must never replace a good checkpoint."""
    from safetensors.torch import save

    name = non_finite_tensor(state)
    if name is not None:
        raise ValueError(f"refusing to save {Path(path).name}: tensor {name!r} has non-finite values (NaN or inf)")

    return atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))


def load_run(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu", use_ema: bool = True) -> tuple[ConditionalPixelCNN, dict]:
    """Rebuild the model of a run directory with its weights. Returns (model in eval mode, config).

    With ``use_ema`` (default) the Polyak-averaged weights are used when the run has them, as
    PixelCNN++ does for evaluation and sampling; ``config["weights"]`` says which were loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(run_dir)
    if "per_class" in config:
        return _load_per_class(run_dir, config, map_location, use_ema)
    weights = Path(run_dir) / WEIGHTS_NAME
    if use_ema and (Path(run_dir) / EMA_NAME).is_file():
        weights = Path(run_dir) / EMA_NAME
    config["weights"] = weights.name
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir} has no {WEIGHTS_NAME}")
    try:
        _check_weights_header(weights, config)
        model = ConditionalPixelCNN(**config["model"])
    except TypeError as err:
        raise ValueError(f"{run_dir}/{CONFIG_NAME}: bad model config ({err})") from None
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, FileNotFoundError) as err:  # a damaged or missing file; other OS errors (permissions, I/O) pass as they are
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


def _load_per_class(run_dir, config: dict, map_location, use_ema: bool):
    """A per-class run as one :class:`~cpixelcnn.per_class_model.PerClassPixelCNN` of its members' (averaged) weights."""
    from cpixelcnn.per_class_model import PerClassPixelCNN

    members = []
    for name, folder in zip(config["class_names"], config["per_class"]["members"]):
        if not (Path(run_dir) / folder / CONFIG_NAME).is_file():
            raise ValueError(
                f"{run_dir}: the model of class {name} ({folder}) has not been trained yet; continue the run with "
                f"`cpixelcnn train --resume --out {run_dir}`"
            )
        member, member_config = load_run(Path(run_dir) / folder, map_location, use_ema)
        if member.num_classes:
            raise ValueError(f"{run_dir}/{folder} holds a class-conditional model; a per-class run's members are unconditional")
        members.append(member)
        config["weights"] = member_config["weights"]
    try:
        model = PerClassPixelCNN(members, config["per_class"]["class_counts"])
    except ValueError as err:
        raise ValueError(f"{run_dir}: {err}") from None
    return model.to(map_location).eval(), config


# -- the training state and the metrics ------------------------------------------------------------


def write_state(directory: str | os.PathLike, state: dict) -> Path:
    """``training_state.pt``: a dict of tensors, numbers and the optimizer and schedule states."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(Path(directory) / STATE_NAME, buf.getvalue())


def read_state(directory: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """The dict in ``training_state.pt`` (weights-only load); a damaged file is a one-line ValueError,
    trouble reading it (memory, permissions, I/O) is raised as it is."""
    path = Path(directory) / STATE_NAME
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch's messages for a damaged file run to several lines
        if is_transient(err):
            raise
        raise ValueError(f"{STATE_NAME} cannot be read ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{STATE_NAME} holds no training state")
    return state


def append_metrics(run_dir: str | os.PathLike, record: dict) -> None:
    """One JSON line at the end of ``metrics.jsonl`` (a line torn by a kill is dropped on resume)."""
    with open(Path(run_dir) / METRICS_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")


# -- what else lives in a run directory: predictions, the curve, sample grids --------------------


def write_predictions(run_dir: str | os.PathLike, split: str, text: str) -> Path:
    """``RUN/predictions_<split>.csv`` (what ``cpixelcnn classify`` writes by default), whole or not at all."""
    return atomic_write_bytes(Path(run_dir) / f"predictions_{split}.csv", text.encode())


def write_curve(run_dir: str | os.PathLike, history: list[dict]) -> Path:
    """``RUN/curve.png``: the training and validation figures of ``history`` (metrics records)."""
    from cpixelcnn.plot import training_curve_png

    return training_curve_png(Path(run_dir) / CURVE_NAME, history, title=f"training {Path(run_dir).name}")


def write_samples(run_dir: str | os.PathLike, epoch: int, model, n: int, image_size: int, seed: int, step: int | None = None) -> Path:
    """``RUN/samples/epoch_NNNN.png``: ``n`` samples per class (one row each) after ``epoch``; with
    ``step`` (a run that ended inside an epoch) ``RUN/samples/step_NNNNNNNN.png``."""
    from cpixelcnn.sampling import write_sample_grid

    name = f"epoch_{epoch:04d}.png" if step is None else f"step_{step:08d}.png"
    return write_sample_grid(Path(run_dir) / SAMPLES_DIR / name, model, n, image_size, seed=seed, scale=2)[0]
