"""A benchmark's child process (a training run in a process of its own), its lines shown as they come."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEARTBEAT_SECONDS = 300


def run_child(
    cmd: list[str], label: str, show: Callable[[str], bool], cwd: Path | None = None
) -> tuple[list[str], int, str]:
    """Runs `cmd` unbuffered; prints `  label: line` for each stdout line `show` accepts, as it
    comes, and `  label: N min` every five minutes while nothing else says it is alive (the child
    is not slowed by either). Returns its stdout lines, exit code and stderr."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        )
        lines: list[str] = []
        reader = threading.Thread(target=_read, args=(proc.stdout, lines, label, show))
        reader.start()
        while reader.is_alive():
            reader.join(timeout=HEARTBEAT_SECONDS)
            if reader.is_alive():
                print(f"  {label}: {(time.perf_counter() - start) / 60:.0f} min", flush=True)
        proc.wait()
        errors.seek(0)
        return lines, proc.returncode, errors.read()


def _read(stream: Any, lines: list[str], label: str, show: Callable[[str], bool]) -> None:
    for line in stream:
        line = line.rstrip("\n")
        lines.append(line)
        if show(line):
            print(f"  {label}: {line}", flush=True)
