"""The exceptions kerasft raises for user mistakes.

A `KerasftError` is the user's to fix: the CLI prints its one-line message and
exits with status 2 (`cli_main`). Any other exception is a bug in kerasft and
keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable


class KerasftError(Exception):
    """Base class for mistakes in the user's config, data, paths or models."""


class ConfigError(KerasftError):
    """The config file or a `--set` override is invalid."""


class DataError(KerasftError):
    """A data file is missing, unreadable or does not fit the config."""


class ModelError(KerasftError):
    """A backbone cannot be found or loaded."""


class TrainingError(KerasftError):
    """Training cannot go on with these settings and data (e.g. the loss became NaN)."""


class OutputError(KerasftError):
    """An output directory cannot be written (a file in the way, read-only, or a full disk)."""


class Interrupted(KerasftError):
    """The user stopped the command (Ctrl-C); the message says where and what was kept."""


def cli_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorates a command's `main(argv)`: a `KerasftError` becomes one `error: ...` line on
    stderr and exit status 2, so users never see a traceback for their own mistakes; Ctrl-C
    becomes one `interrupted: ...` line and exit status 130 (128 + SIGINT), as shells expect."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except Interrupted as exc:
            print(f"interrupted: {exc}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C).", file=sys.stderr)
            return 130
        except KerasftError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:
            if not disk_full(exc):
                raise
            print(
                f"error: the disk is full ({first_line(exc)}). Free some space and run the "
                "command again; nothing half-written was kept.",
                file=sys.stderr,
            )
            return 2

    return wrapped


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or quota) is full, as an OSError or in TensorFlow's words."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
