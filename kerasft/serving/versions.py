"""Export versions in the TensorFlow Serving layout: `<model dir>/<integer version>/saved_model.pb`."""

from __future__ import annotations

from pathlib import Path

from kerasft.errors import DataError


def list_versions(model_dir: str | Path) -> list[int]:
    """The integer version folders under `model_dir`, oldest first (none if it does not exist)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir())


def next_version(model_dir: str | Path) -> int:
    """One more than the highest version under `model_dir` (1 for a new model)."""
    return max(list_versions(model_dir), default=0) + 1


def resolve_version(path: str | Path) -> Path:
    """A version directory as given, or the newest complete version under a model directory.

    Raises:
        DataError: no SavedModel there.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    for version in reversed(list_versions(path)):
        if (path / str(version) / "saved_model.pb").is_file():
            return path / str(version)
    raise DataError(
        f"{path}: no SavedModel here. Pass an export_dir= printed by kerasft.train, or its parent."
    )
