"""Content-keyed cache files (token ids, augmented rows, a teacher's outputs): each written
whole or not at all, and computed again, not a traceback, when one is found damaged."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kerasft.errors import first_line

T = TypeVar("T")


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """Calls `write(tmp)` on a file of this process's own beside `path`, then renames it to
    `path`: a reader, or a second run writing the same entry, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = own_partial(path)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def own_partial(path: Path) -> Path:
    """`<path>.<pid>-<random>.partial`: a name beside `path` no other writer uses."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def read_or_forget(path: Path | None, read: Callable[[Path], T]) -> T | None:
    """`read(path)`; None when there is no such file, or after removing it (with a line saying
    so) when it cannot be read: a damaged entry (a disk error, a copy cut short) is rebuilt."""
    if path is None or not path.is_file():
        return None
    try:
        return read(path)
    except Exception as exc:  # noqa: BLE001 - each reader raises its own types for a bad file
        forget(path, exc)
        return None


def forget(path: Path, exc: BaseException) -> None:
    """Removes the damaged cache file `path`, saying so."""
    print(f"cache: {path} cannot be read ({first_line(exc)}); removed, computing it again")
    path.unlink(missing_ok=True)
