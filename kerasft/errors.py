"""The exceptions kerasft raises for user mistakes, and for the other ends of a command that
deserve one line rather than a traceback (Ctrl-C, a multi-worker run's lost peer).

A `KerasftError` ends a command in its one-line message and its `exit_status` (`cli_main`):
2 for the user's mistakes. Any other exception is a bug in kerasft and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno


class KerasftError(Exception):
    """Base class for mistakes in the user's config, data, paths or models."""

    exit_status = 2


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


class PeerLost(KerasftError):
    """A worker of a multi-worker run lost the cluster (another worker died or the network
    failed), or the cluster never formed (a task did not start in time). Not the user's
    input, so exit status 1; the message says where training stopped and how to go on."""

    exit_status = 1


_STOP: list[int] = []  # the signals that asked the running command to stop (cli_main's)
_BETWEEN_STEPS: list[None] = []  # one entry per `stop_between_steps` block running


def request_stop(signum: int) -> None:
    """Notes that a signal asked the command to stop, for `stop_signal`."""
    _STOP.append(signum)


def stop_signal() -> int | None:
    """The first signal that asked the command to stop (SIGINT or SIGTERM), or None. Its
    KeyboardInterrupt can be lost: Python runs a handler wherever the interpreter is, a
    garbage collector's finalizer included, which prints and drops what it raises; what
    ended the command then still ends it as the interrupt would have."""
    return _STOP[0] if _STOP else None


def clear_stop() -> None:
    _STOP.clear()


def check_stop() -> None:
    """Raises KeyboardInterrupt if a signal asked the command to stop: the place a loop of
    steps stops at inside `stop_between_steps`."""
    if _STOP:
        raise KeyboardInterrupt


def stops_between_steps() -> bool:
    """Whether a `stop_between_steps` block is running (the signal handlers ask)."""
    return bool(_BETWEEN_STEPS)


@contextlib.contextmanager
def stop_between_steps():
    """While the block runs, the first Ctrl-C or SIGTERM only notes the request
    (`cli_main`'s handlers), and the block's loop stops at its next `check_stop()`, between
    two steps; a second signal stops at once.

    A KeyboardInterrupt raised wherever the interpreter happens to be can land in Python code
    that TensorFlow's C++ runtime called (a step, a dataset iterator, a finalizer) and that
    does not expect it: the process then died of a segmentation fault, or failed with
    `SystemError: ... bad argument to internal function`, instead of stopping in one line.
    """
    _BETWEEN_STEPS.append(None)
    try:
        yield
    finally:
        _BETWEEN_STEPS.pop()
    check_stop()  # asked during the block's last step


def system_refusal(exc: BaseException) -> str | None:
    """The one line for an error the system raised about where the command writes or reads,
    not about the command's input as such: a full disk (or quota), or a path with a name
    longer than the file system allows (as an OSError or in TensorFlow's words). None for
    any other error."""
    text = str(exc)
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "quota exceeded" in text:
        return f"the disk is full ({first_line(exc)}). Free some space and run the command again."
    if code == errno.ENAMETOOLONG or "File name too long" in text:
        return _too_long(exc)
    return None


def _too_long(exc: BaseException) -> str:
    """The path, cut to its start, which name in it (or the whole of it) is too long, and what
    to do."""
    path = str(getattr(exc, "filename", None) or first_line(exc))
    longest = max(len(part.encode()) for part in path.split("/"))
    size = len(path.encode())
    shown = f"{path[:100]}... ({len(path)} characters)" if len(path) > 120 else path
    if longest <= 255:  # every name fits: the whole path is past the limit (4,096 on Linux)
        return (
            f"the path {shown} is longer than the file system allows ({size:,} bytes). Use a "
            "shorter path."
        )
    return (
        f"a name in the path {shown} is longer than the file system allows (this one has "
        f"{longest} bytes; most file systems allow 255 a name). Use a shorter file or folder name."
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
