"""Benchmarks' work directories (runs, token caches, exports: gigabytes for some benchmarks),
made under the system's temporary directory and removed when the process exits, unless kept."""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path


def work_dir(prefix: str, keep: bool = False) -> Path:
    """A new directory that is removed when this process exits (normally, by an exception or
    by Ctrl-C; not by SIGKILL), or kept and said where with `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if keep:
        print(f"work directory {work} (kept: --keep)", flush=True)
    else:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def add_keep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (runs, exports, caches) instead of removing it at exit",
    )
