"""Export versions in the TensorFlow Serving layout: `<model dir>/<integer version>/saved_model.pb`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft.errors import DataError, first_line


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


def load_export(path: str | Path) -> tuple[Path, Any]:
    """The version directory `path` resolves to (`resolve_version`) and its loaded SavedModel.

    Registers tensorflow-text's ops first: a raw-text export holds them, and a process that
    never imported tensorflow_text cannot load it (`Op type not registered 'NormalizeUTF8'`).

    Raises:
        DataError: no SavedModel there, or one that cannot be read (a corrupt `saved_model.pb`,
            missing or damaged `variables/`).
    """
    import tensorflow_text  # noqa: F401 - registers the raw-text signature's ops

    from kerasft._compat import tf

    version = resolve_version(path)
    try:
        return version, tf.saved_model.load(str(version))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise DataError(
            f"{version}: cannot load this SavedModel ({first_line(exc)}). Re-export it with "
            "`python -m kerasft.export --run RUN_DIR`, or pass another version."
        ) from None


def read_labels(path: Path) -> list[str]:
    """The label names of an export's `labels.txt`, one per line (split on newlines only, as
    written: other characters `str.splitlines` breaks at may be part of a name)."""
    with path.open(encoding="utf-8", newline="") as handle:  # no newline translation
        text = handle.read()
    return text.removesuffix("\n").split("\n") if text else []
