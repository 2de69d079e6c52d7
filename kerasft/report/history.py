"""Reading a run's per-epoch and per-step logs (`history.jsonl`, `steps.jsonl`).

`kerasft.training.callbacks.EpochLog` and `StepLog` write them, a line per epoch
or step as training goes, so an interrupted run keeps its history.
"""

from __future__ import annotations

import json
from pathlib import Path


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
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            latest[record[key]] = record
    return [latest[k] for k in sorted(latest)]
