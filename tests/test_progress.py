"""Progress bars: redrawn often on a terminal, rarely in a log file."""

from __future__ import annotations

import sys
import time

from kerasft.progress import bar


def _run(units: int = 200) -> None:
    with bar(units, "ex", "work") as progress:
        for _ in range(units):
            progress.update(1)
            time.sleep(0.003)  # 0.6 s in all


def test_a_log_file_gets_the_final_count_without_the_redraws(capsys):
    _run()
    err = capsys.readouterr().err
    assert "work: 100%" in err and "200/200" in err
    assert err.count("\r") <= 2  # the first draw and the last, not one per 0.1 s


def test_a_terminal_gets_a_live_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _run()
    assert capsys.readouterr().err.count("\r") >= 4
