"""Progress bars that read well in a terminal and in a log file.

On a terminal a bar redraws ten times a second, as tqdm does. Written to a file or a
pipe (a batch job's log, `nohup`, CI), every redraw is kept: a four-minute pass left a
single line of 100 KB. There the bar redraws every 30 seconds instead, and once at the end.
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL = 30.0  # seconds between redraws when stderr is not a terminal


def bar(total: int, unit: str, desc: str) -> Any:
    """A tqdm bar on stderr for `total` units, redrawn less often when stderr is not a terminal."""
    from tqdm import tqdm

    terminal = getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(total=total, unit=unit, desc=desc, mininterval=0.1 if terminal else LOG_INTERVAL)
