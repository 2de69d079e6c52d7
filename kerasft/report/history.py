"""Reading a run's per-epoch and per-step logs (`history.jsonl`, `steps.jsonl`).

`kerasft.training.callbacks.EpochLog` and `StepLog` write them, a line per epoch
or step as training goes, so an interrupted run keeps its history.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_history(path: Path) -> list[dict]:
    """Per-epoch logs `EpochLog` wrote, one per epoch (the last record wins if an epoch was redone)."""
    if not path.is_file():
        return []
    by_epoch = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_steps(path: Path) -> list[dict]:
    """Per-step records `StepLog` wrote, by step (the last record wins where a resumed run redid steps)."""
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]
