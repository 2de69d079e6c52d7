"""`python -m kerasft.report RUN_DIR [RUN_DIR ...]`: rebuild a run's report, or compare runs."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from kerasft.cli import cli_main
from kerasft.errors import DataError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasft.report",
        description="One run directory: rebuild its report.html and plots/. Several: a comparison "
        "page (the config keys that differ, metrics side by side, overlaid curves). A tuning "
        "directory (kerasft.tune's, with trials.csv): its trials best first and each searched "
        "parameter against the objective. A folder of runs (runs/<name>) stands for its newest "
        "finished run. The last output line is report=<path>.",
    )
    p.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN_DIR", help="run, runs or tuning directory"
    )
    p.add_argument(
        "--output",
        type=Path,
        help="where a comparison goes (default: <runs root>/comparisons/<timestamp>/)",
    )
    p.add_argument(
        "--errors", type=int, default=20, help="most confident test errors to list (default 20)"
    )
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from kerasft.report import compare_runs, tuning_report, write_report

    args = parser().parse_args(argv)
    if len(args.runs) == 1 and (args.runs[0] / "trials.csv").is_file():
        path = tuning_report(args.runs[0], args.output)
    else:
        runs = [finished_run(p) for p in args.runs]
        if len(runs) == 1:
            path = write_report(runs[0], errors=args.errors)
        else:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            output = args.output or runs[0].parent.parent / "comparisons" / stamp
            path = compare_runs(runs, output)
    print(f"report={path}")
    return 0


def finished_run(path: Path) -> Path:
    """`path` if it is a finished run; for a folder of runs, its newest finished one.

    Raises:
        DataError: no such folder, or no finished run in it.
    """
    if not path.is_dir():
        raise DataError(
            f"{path}: no such directory. Pass a run directory (runs/<name>/<timestamp>)."
        )
    if (path / "metrics.json").is_file():
        return path
    finished = sorted(p for p in path.iterdir() if (p / "metrics.json").is_file())
    if not finished:
        raise DataError(
            f"{path}: not a finished run (no metrics.json) and holds none. Pass runs/<name>/<timestamp> "
            "of a run that completed."
        )
    return finished[-1]
