"""`kerasft <command> ...`: one entry point for the module commands, and what they share.

Every command's `main(argv)` is wrapped in `cli_main` (one `error: ...` line and exit
status 2 for bad input, 130 for Ctrl-C); `run_parser` is the argument parser of the
commands that start a training run (train, distill). `python -m kerasft` runs `main`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable

from kerasft.errors import (
    Interrupted,
    KerasftError,
    clear_stop,
    request_stop,
    stop_signal,
    stops_between_steps,
    system_refusal,
)

USAGE = """usage: kerasft <command> [options]   (or python -m kerasft <command>)

kerasft train   --config configs/x.yaml     (python -m kerasft.train)
kerasft tune    --config configs/x.yaml     (python -m kerasft.tune)
kerasft export  --run runs/x/<timestamp>    (python -m kerasft.export)
kerasft predict --model saved_models/x --input in.csv --output out.jsonl   (python -m kerasft.predict)
kerasft distill --config configs/distill_sst2.yaml   (python -m kerasft.distill)
kerasft report  runs/x/<timestamp> [runs/y/<timestamp> ...]   (python -m kerasft.report)
kerasft pretrain --config configs/pretrain_tweets.yaml   (python -m kerasft.pretrain)

`kerasft <command> --help` describes a command's options. Exit status 2 means bad input
(one `error:` line says what and where), 130 that Ctrl-C stopped the command, 143 that
SIGTERM did (a run keeps its backup: the same command resumes it), 1 that a worker of a
multi-worker run lost another or never saw it start (start every worker again) or a bug
(a traceback).
"""

COMMANDS = ("train", "tune", "export", "predict", "distill", "report", "pretrain")


def cli_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorates a command's `main(argv)`: a `KerasftError` becomes one `error: ...` line on
    stderr and its exit status (2: bad input), so users never see a traceback for their own
    mistakes; Ctrl-C becomes one `interrupted: ...` line and exit status 130 (128 + SIGINT).
    SIGTERM (a scheduler preempting the job, `kill`, `timeout`) takes Ctrl-C's way, so a run
    keeps its backup and a half-written output is removed, and exits 143 (128 + SIGTERM)."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        _lines_as_they_come()
        with _stop_signals():
            try:
                return main(argv)
            except (Interrupted, KeyboardInterrupt) as exc:
                print(_stopped(exc), file=sys.stderr)
                return 128 + (stop_signal() or signal.SIGINT)
            except KerasftError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return exc.exit_status
            except Exception as exc:
                if stop_signal():  # the interrupt was lost (see stop_signal); this followed
                    print(_stopped(exc), file=sys.stderr)
                    return 128 + stop_signal()
                refusal = system_refusal(exc)
                if refusal is None:
                    raise
                print(f"error: {refusal}", file=sys.stderr)
                return 2

    return wrapped


def _lines_as_they_come() -> None:
    """Output written to a file or a pipe (a job's log, `kubectl logs`, `| tee`) appears line by
    line, as on a terminal, not in blocks of 8 KB when Python's buffer fills."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # a stream replaced by a test
            stream.reconfigure(line_buffering=True)


def _stopped(exc: BaseException) -> str:
    """The one line of a command stopped by Ctrl-C or SIGTERM: what stopped it, and where it
    stopped and what was kept when the command says (`Interrupted`)."""
    terminated = stop_signal() == signal.SIGTERM
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    if isinstance(exc, Interrupted):
        return f"{how}: {exc}"
    return f"{how}." if terminated else "interrupted (Ctrl-C)."


@contextlib.contextmanager
def _stop_signals():
    """While the block runs, Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, and
    `stop_signal()` says which came first; inside `stop_between_steps` (training's loop) the
    first one is only noted, and the loop stops after its step. The previous handlers come
    back after. Only the main thread can set handlers: elsewhere both keep theirs; a SIGINT
    ignored when the command started (a background job of a shell) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        again = stop_signal() is not None
        request_stop(signum)
        if stops_between_steps() and not again:
            os.write(2, _AFTER_THIS_STEP[signum])  # not print: the handler may run inside one
            return
        raise KeyboardInterrupt

    signums = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signums.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
        clear_stop()


_AFTER_THIS_STEP = {
    signal.SIGINT: b"\nCtrl-C: stopping after this step (Ctrl-C again stops at once)\n",
    signal.SIGTERM: b"\nSIGTERM: stopping after this step (a second SIGTERM stops at once)\n",
}


def run_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """`--config`, `--fresh` and overrides: the arguments of a command that starts a training run."""
    from kerasft import config as config_lib

    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="The last three output lines are run_dir=<path>, export_dir=<path> and report=<path> "
        "(report.html in the run directory). "
        "Exit status 2 means a problem with the config, data or backbone (the message says which); "
        "1, that a worker of a multi-worker run lost another or never saw it start (start every worker again), "
        "or a bug; 130 and 143, that Ctrl-C or SIGTERM stopped it (a run with a backup resumes with the same command).",
    )
    p.add_argument(
        "--config", required=True, help="the experiment's YAML file, e.g. configs/quickstart.yaml"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a new run even if an interrupted run of the same config could be resumed",
    )
    config_lib.add_override_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"\nerror: unknown command `{argv[0]}`; use one of {', '.join(COMMANDS)}",
                file=sys.stderr,
            )
            return 2
        return 0
    module = "kerasft.report.cli" if argv[0] == "report" else f"kerasft.{argv[0]}"
    return importlib.import_module(module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
