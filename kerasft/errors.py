"""The exceptions kerasft raises for user mistakes.

A `KerasftError` is the user's to fix: the CLI prints its one-line message and
exits with status 2 (`cli_main`). Any other exception is a bug in kerasft and
keeps its traceback.
"""

from __future__ import annotations

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


def cli_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorates a command's `main(argv)`: a `KerasftError` becomes one `error: ...` line on
    stderr and exit status 2, so users never see a traceback for their own mistakes."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except KerasftError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped
