"""Reading a run's per-epoch and per-step logs (`history.jsonl`, `steps.jsonl`).

`kerasft.training.callbacks.EpochLog` and `StepLog` write them, a line per epoch
or step as training goes, so an interrupted run keeps its history.
"""

from __future__ import annotations

import json
from pathlib import Path

from kerasft.errors import DataError


def read_history(path: Path) -> list[dict]:
    """Per-epoch logs `EpochLog` wrote, one per epoch (the last record wins if an epoch was redone)."""
    return _last_per(path, "epoch")


def read_steps(path: Path) -> list[dict]:
    """Per-step records `StepLog` wrote, by step (the last record wins where a resumed run redid steps)."""
    return _last_per(path, "step")


def _last_per(path: Path, key: str) -> list[dict]:
    """The JSON-lines records of `path` in order of `key`, the last one of each value kept."""
    if not path.is_file():
        return []
    latest = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            latest[record[key]] = record
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # a line cut short by a kill: the records before it stand
                break
            raise DataError(
                f"{path}:{number}: not a {key} record; the run directory is damaged. Train "
                "again, or restore the file from a copy."
            ) from None
    return [latest[k] for k in sorted(latest)]
