"""`python -m kerasft.report RUN_DIR [RUN_DIR ...]`: rebuild a run's report, or compare runs."""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
        help="where a comparison of several runs, or a tuning directory's report, goes (default: "
        "<runs root>/comparisons/<timestamp>/, or the tuning directory); not for one run",
    )
    p.add_argument(
        "--errors", type=int, default=20, help="most confident test errors to list (default 20)"
    )
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from kerasft.report import compare_runs, tuning_report, write_report

    args = parser().parse_args(argv)
    if args.errors < 0:
        raise DataError(f"--errors {args.errors}: give 0 or more test errors to list.")
    if args.output is not None:
        check_output(args.output)
    if len(args.runs) == 1 and (args.runs[0] / "trials.csv").is_file():
        path = tuning_report(args.runs[0], args.output)
    else:
        runs = [finished_run(p) for p in args.runs]
        resolved = [r.resolve() for r in runs]
        twice = next((r for i, r in enumerate(runs) if resolved[i] in resolved[:i]), None)
        if twice is not None:
            raise DataError(
                f"{twice}: given twice (a folder of runs stands for its newest run); compare "
                "different runs."
            )
        if len(runs) == 1:
            if args.output is not None:
                raise DataError(
                    f"--output {args.output}: one run's report is rebuilt in its own directory "
                    f"({runs[0]}); --output places a comparison of several runs or a tuning report."
                )
            path = write_report(runs[0], errors=args.errors)
        else:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            output = args.output or runs[0].parent.parent / "comparisons" / stamp
            path = compare_runs(runs, output)
    print(f"report={path}")
    return 0


def check_output(output: Path) -> None:
    """Refuses an `--output` that is a file or cannot be made, before any page is written."""
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output}: is a file. Give a directory (created if missing).")
    parent = next((p for p in (output, *output.parents) if p.exists()), Path.cwd())
    if not os.access(parent, os.W_OK):
        raise DataError(
            f"--output {output}: {parent} is not writable. Give a directory you can write."
        )


def finished_run(path: Path) -> Path:
    """`path` if it is a finished run; for a folder of runs, its newest finished one.

    Raises:
        DataError: no such folder, or no finished run in it.
    """
    if not path.is_dir():
        what = "a file, not a directory" if path.exists() else "no such directory"
        raise DataError(f"{path}: {what}. Pass a run directory (runs/<name>/<timestamp>).")
    if (path / "metrics.json").is_file():
        return path
    finished = sorted(p for p in path.iterdir() if (p / "metrics.json").is_file())
    if not finished:
        raise DataError(
            f"{path}: not a finished run (no metrics.json) and holds none. Pass runs/<name>/<timestamp> "
            "of a run that completed."
        )
    return finished[-1]
