"""Progress bars that read well in a terminal and in a log file.

On a terminal a bar redraws ten times a second, as tqdm does. Written to a file or a
pipe (a batch job's log, `nohup`, CI), every redraw is kept: a four-minute pass left a
single line of 100 KB. There the bar redraws every 30 seconds instead, and once at the end.
The `datasets` library's own bars (`Dataset.map`) cannot be slowed down from outside: in a
log they are off and one line reports the work when it is done.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

LOG_INTERVAL = 30.0  # seconds between redraws when stderr is not a terminal


def on_terminal() -> bool:
    """Whether stderr, where the bars are drawn, is a terminal."""
    return getattr(sys.stderr, "isatty", lambda: False)()


def bar(total: int, unit: str, desc: str) -> Any:
    """A tqdm bar on stderr for `total` units, redrawn less often when stderr is not a terminal."""
    from tqdm import tqdm

    interval = 0.1 if on_terminal() else LOG_INTERVAL
    # tqdm's monitor thread forces a redraw every `maxinterval` (10 s) whatever `mininterval` says.
    return tqdm(
        total=total, unit=unit, desc=desc, mininterval=interval, maxinterval=max(10.0, interval)
    )


def _datasets_bars_set_by_user() -> bool:
    """`HF_DATASETS_DISABLE_PROGRESS_BARS` set: the user's choice, which datasets enforces."""
    return "HF_DATASETS_DISABLE_PROGRESS_BARS" in os.environ


@contextlib.contextmanager
def datasets_bars_off() -> Iterator[None]:
    """The `datasets` library's own bars off for the block, then as they were (unless the
    user set `HF_DATASETS_DISABLE_PROGRESS_BARS`, which stays in force)."""
    if _datasets_bars_set_by_user():
        yield
        return
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


@contextlib.contextmanager
def datasets_work(total: int, unit: str, desc: str) -> Iterator[None]:
    """Around a `datasets` call that draws its own bar: on a terminal the bar as it is; in a
    log no bar, and `desc: N unit in S s` once the call returns. `HF_DATASETS_DISABLE_PROGRESS_BARS`,
    where set, is the user's choice and stays in force."""
    if on_terminal() or _datasets_bars_set_by_user():
        yield
        return
    start = time.perf_counter()
    with datasets_bars_off():
        yield
    print(f"{desc}: {total:,} {unit} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
