"""The CPEN 455 course layout: ``root/<split>.csv`` (no header; rows ``0000000.jpg,1``), images in
``root/<split>/``, class names in ``classes.txt`` or counted on the training split."""

from __future__ import annotations

from pathlib import Path

import torch

from cpixelcnn.data.cache import CacheSetting
from cpixelcnn.data.images import decode_files, probe_files
from cpixelcnn.data.registry import DataFormat, Native, register
from cpixelcnn.data.types import MAX_CLASSES, SPLITS, DataError, Dataset

NAMES_FILES = ("classes.txt", "names.txt")


def _read_names_file(root: Path) -> list[str] | None:
    for name in NAMES_FILES:
        path = root / name
        if path.is_file():
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            except UnicodeDecodeError:
                raise DataError(f"{path} is not UTF-8 text") from None
            if not names:
                raise DataError(f"{path} lists no class names")
            if len(set(names)) != len(names):
                raise DataError(f"{path} lists a class name twice")
            if len(names) > MAX_CLASSES:
                raise DataError(f"{path} lists {len(names)} classes, more than {MAX_CLASSES}")
            return names
    return None


def _read_course_csv(csv_path: Path, split: str) -> list[tuple[str, int]]:
    """Rows (file name, label) of ``<split>.csv``: UTF-8 (a BOM is tolerated); every name a plain
    file name inside ``<split>/`` (no folders, no ``..``, no absolute paths), none listed twice."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        name, label = parts[0], -1
        if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
            raise DataError(f"{csv_path}:{lineno}: {name!r} is not a file name inside {split}/ (no folders, '..' or absolute paths)")
        if name in seen:
            raise DataError(f"{csv_path}:{lineno}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
        if len(parts) > 1 and parts[1] not in ("", "-1"):
            try:
                label = int(parts[1])
            except ValueError:
                raise DataError(f"{csv_path}:{lineno}: label {parts[1]!r} is not an integer") from None
            if not 0 <= label < MAX_CLASSES:
                raise DataError(f"{csv_path}:{lineno}: label {label} is outside 0..{MAX_CLASSES - 1} (-1 or empty means unknown)")
        rows.append((name, label))
    if not rows:
        raise DataError(f"{csv_path} lists no images")
    return rows


def course_class_names(root: str | Path, model_classes: list[str] | None = None) -> list[str]:
    """The course layout's classes: ``classes.txt`` (one name per line), else ``Class0``…``ClassK-1``
    with K = 1 + the largest label of the *training* split — the same for every split; a folder
    with neither (e.g. only the test split) takes ``model_classes``, the classes of the model reading it."""
    root = Path(root)
    names = _read_names_file(root)
    if names:
        return names
    train_csv = root / "train.csv"
    labels = [lbl for _, lbl in _read_course_csv(train_csv, "train") if lbl >= 0] if train_csv.is_file() else []
    if labels:
        return [f"Class{i}" for i in range(max(labels) + 1)]
    if model_classes is not None:
        return list(model_classes)
    raise DataError(f"{root}: no classes.txt and no labelled train.csv to count the classes from; add classes.txt (one class name per line)")


def load_course_split(
    root: str | Path, split: str, size: int = 32, channels: int = 3, class_names: list[str] | None = None, cache: CacheSetting | None = None
) -> Dataset:
    """The CPEN 455 layout: ``root/<split>.csv`` (no header; rows ``0000000.jpg,1``) and images in
    ``root/<split>/``. A missing label, or -1, means unknown (the test split). Class names come from
    :func:`course_class_names` (``classes.txt``, else counted on the training split)."""
    root = Path(root)
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} does not exist (splits: {', '.join(s for s in SPLITS if (root / f'{s}.csv').is_file()) or 'none'})")
    rows = _read_course_csv(csv_path, split)
    names = course_class_names(root, class_names)
    for name, label in rows:
        if label >= len(names):
            raise DataError(
                f"{csv_path}: {name} has label {label}, outside 0..{len(names) - 1} (the classes: {', '.join(names[:8])}{'…' if len(names) > 8 else ''})"
            )
    images = decode_files(
        root, [f"{split}/{name}" for name, _ in rows], f"the {split} split of {root}", "course", size, channels, cache or CacheSetting(), split
    )
    labels = torch.tensor([lbl for _, lbl in rows], dtype=torch.long)
    return Dataset(torch.from_numpy(images), labels, names, [n for n, _ in rows], layout="course")


def _describe(source: str) -> Native:
    """The splits with a CSV, the classes, and the size and channels of the images they list."""
    root = Path(source)
    splits = tuple(s for s in SPLITS if (root / f"{s}.csv").is_file())
    files = [f"{s}/{name}" for s in splits for name, _ in _read_course_csv(root / f"{s}.csv", s)[:8]]
    side, channels = probe_files(root, files)
    try:
        names = course_class_names(root)
    except DataError:
        names = None
    return Native(side, channels, names, splits)


def _recognises(root: Path) -> bool:
    return any((root / f"{split}.csv").is_file() for split in SPLITS)


register(
    DataFormat(
        "course",
        "folder",
        "a course-layout FOLDER (<split>.csv, <split>/)",
        "the CPEN 455 layout: <split>.csv rows 'file,label' and images in <split>/",
        lambda r: load_course_split(r.source, r.split, r.size, r.channels, r.class_names, r.cache),
        lambda source, split: (Path(source) / f"{split}.csv").is_file(),
        _describe,
        recognises=_recognises,
        precedence=10,  # before the unlabelled-images format: its folders hold images too
        prediction_rows=lambda files, predicted: [f"{f},{int(p)}" for f, p in zip(files, predicted)],  # the course's submission rows
    )
)
