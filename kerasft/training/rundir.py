"""Run directories as shared state: where a run writes, a lock while it is alive, stale leftovers,
writable outputs, and the interrupted run a command resumes.

A run holds an exclusive `flock` on `<run dir>/.lock` from its first second to its end. The
kernel drops the lock when the process dies, however it dies, so "locked" means "a live
process is writing here": a second command of the same config never resumes (or deletes)
a live run, and a directory that is unlocked, unfinished and holds nothing to resume from
is a leftover of a run killed before its first backup.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from kerasft import config as config_lib
from kerasft._compat import tf
from kerasft.config import Config
from kerasft.errors import (
    ConfigError,
    Interrupted,
    KerasftError,
    OutputError,
    PeerLost,
    stop_signal,
    system_refusal,
)
from kerasft.training.strategies import is_chief, is_multi_worker

LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run directory, held until `release` or the process's end."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._handle: IO[str] | None = open(run_dir / LOCK, "a+")  # noqa: SIM115 - held open
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            self._handle = None
            raise ConfigError(
                f"{run_dir} is being written by another live kerasft process; wait for it to "
                "finish, or start a separate run with --fresh."
            ) from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


def is_live(run_dir: Path) -> bool:
    """Whether a live process holds `run_dir`'s lock."""
    path = run_dir / LOCK
    if not path.is_file():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def holds_progress(run_dir: Path) -> bool:
    """Whether a run directory holds anything worth keeping: a finished run's metrics, a
    backup to resume from, or a best checkpoint."""
    return (
        (run_dir / "metrics.json").exists()
        or any((run_dir / "backup").rglob("checkpoint"))
        or any((run_dir / "checkpoints").glob("*.index"))
    )


def remove_leftovers(parent: Path) -> list[Path]:
    """Removes the run directories under `parent` (`<output_dir>/<name>`) that a run killed
    before its first backup left: unlocked, and holding no progress. Returns them.

    Only directories with a lock file are considered (runs of this kerasft), and never
    multi-worker ones (their workers agree on the directory by name).
    """
    removed = []
    if not parent.is_dir():
        return removed
    for run_dir in sorted(parent.iterdir()):
        if (
            run_dir.is_dir()
            and not run_dir.name.startswith("multi-worker-")
            and (run_dir / LOCK).is_file()
            and not is_live(run_dir)
            and not holds_progress(run_dir)
        ):
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
    return removed


def check_outputs(cfg: Config) -> None:
    """Checks that the run's, the cache's and the export's directories can be written, before
    any work.

    Raises:
        OutputError: a file in the way, or a directory that cannot be written.
    """
    check_writable(cfg.training.output_dir, "training.output_dir", cfg.name)
    if cfg.data.cache_dir:
        check_writable(cfg.data.cache_dir, "data.cache_dir")
    if cfg.export.enabled:
        check_writable(cfg.export.dir, "export.dir", cfg.name)


def check_writable(path: str | Path, key: str, name: str | None = None) -> None:
    """Checks, before any work, that the directory `key` names (and `<path>/<name>` in it)
    can be created and written.

    Raises:
        OutputError: naming `key` and its value, when a file stands at or above that path,
            or the first existing directory on the way cannot be written.
    """
    given = Path(path).expanduser()
    target = given / name if name else given
    existing = target
    while not existing.exists() and existing.parent != existing:
        if existing.is_symlink():  # mkdir would say "File exists" (dangling) or ELOOP (a loop)
            raise OutputError(
                f"`{key}: {path}`: {existing} is a symbolic link to nothing (its target is "
                f"missing, or it points to itself). Fix or remove the link, or point `{key}` "
                "elsewhere."
            )
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == given else f"has a file in the way, {existing}"
        raise OutputError(
            f"`{key}: {path}` {where}. Point `{key}` at a directory (created if missing), "
            "or move that file away."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(
            f"`{key}: {path}`: cannot write in {existing} ({exc.strerror or exc}). Point `{key}` "
            "at a writable directory."
        ) from None


# What a worker of a multi-worker run sees when another dies or the network fails: its
# collectives end in one of these (`Socket closed`, `Connection reset by peer`, a heartbeat
# timeout, or the ops TensorFlow aborts after the first failure).
LOST_CLUSTER = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


def _collective_failure(exc: BaseException) -> str:
    """TensorFlow's reason a collective failed, without its wrapping: `Collective ops is aborted
    by: failed to connect to all addresses; ...` says `failed to connect to all addresses; ...`."""
    text = re.sub(r"\{\{function_node [^}]*\}\}", "", getattr(exc, "message", None) or str(exc))
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Graph execution error", "Detected at node")):
            return line.split("aborted by: ")[-1][:200]
    return type(exc).__name__


def ending_for(
    exc: BaseException,
    run_dir: Path,
    keep: bool,
    where: tuple[int, int] | None,
    cluster: bool = False,
) -> KerasftError | None:
    """What a run that stopped on `exc` raises, after removing its directory unless `keep`
    (a resumed run, or a worker's) or it holds a backup the same command resumes from.
    `where` is the (epoch, step) training had reached, for the Ctrl-C line; `cluster`, that
    the run is one worker of several.

    A user's mistake, Ctrl-C or SIGTERM, what the system refuses (a full disk, a name too
    long: `system_refusal`) and a worker's lost cluster end in one line (`KerasftError`);
    anything else is a bug, left as it is (None).
    """
    # After a SIGTERM whose KeyboardInterrupt was lost, whatever ended training (a peer's
    # collective failing as that worker stopped) ends it as the interrupt would have.
    interrupted = isinstance(exc, KeyboardInterrupt) or stop_signal() is not None
    refusal = None if interrupted else system_refusal(exc)
    lost = cluster and not interrupted and isinstance(exc, LOST_CLUSTER)
    if not (interrupted or refusal or lost or isinstance(exc, KerasftError)):
        return None
    resumable = holds_progress(run_dir) and not (run_dir / "metrics.json").exists()
    if not keep and not ((interrupted or lost) and resumable):
        shutil.rmtree(run_dir, ignore_errors=True)
    if refusal:
        return OutputError(f"{refusal} {'Kept' if keep else 'Removed'} {run_dir}.")
    stopped = f"at epoch {where[0]}, step {where[1]}" if where else "before its first step"
    if lost:
        return PeerLost(
            f"multi-worker: this worker lost the cluster ({_collective_failure(exc)}): another worker "
            f"stopped or the network failed. Training stopped {stopped}; start every worker "
            "again with the same command to "
            + (f"resume {run_dir} from its last backup." if resumable else "train from the start.")
        )
    if not interrupted:
        return exc  # type: ignore[return-value] - a KerasftError
    if resumable:
        return Interrupted(
            f"training stopped {stopped}; run the same command again to resume {run_dir} "
            "from its last backup."
        )
    return Interrupted(
        f"training stopped {stopped}, before its first backup; nothing to resume"
        + ("." if keep else f", so {run_dir} was removed.")
    )


def open_run_dir(
    cfg: Config, data: Any, strategy: tf.distribute.Strategy, resume_dir: Path | None
) -> tuple[Path, Path | None, RunLock | None]:
    """The run directory (new, resumed or the cluster's) with config.yaml, labels.json and, with
    `data.augment`, augmented.jsonl in it, locked for this process (`kerasft.training.rundir`).

    Returns:
        (run directory, the same directory if it is being resumed, else None, the lock; None
        for a multi-worker run, whose workers share the directory).
    """
    lock = None
    if is_multi_worker(strategy):
        run_dir, resume_dir = _multi_worker_run_dir(cfg)
    else:
        run_dir = resume_dir or _new_run_dir(Path(cfg.training.output_dir) / cfg.name)
        lock = RunLock(run_dir)
    if is_chief(strategy):
        (run_dir / "config.yaml").write_text(config_lib.dump_config(cfg), encoding="utf-8")
        (run_dir / "labels.json").write_text(data.splits.vocab.to_json(), encoding="utf-8")
        if data.augmented:  # for inspection: what each operation made of which example
            (run_dir / "augmented.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data.augmented),
                encoding="utf-8",
            )
    # TensorFlow checkpoint format: it restores into mirrored variables too (HDF5 does not).
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    return run_dir, resume_dir, lock


def unfinished_run(cfg: Config) -> Path | None:
    """The newest run of this exact config that was interrupted (a backup and no metrics.json)
    and that no live process is still writing (`kerasft.training.rundir`)."""
    parent = Path(cfg.training.output_dir) / cfg.name
    if not parent.is_dir():
        return None
    resolved = config_lib.dump_config(cfg)
    for run_dir in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        backup = run_dir / "backup"
        complete = (run_dir / "metrics.json").exists()
        config = run_dir / "config.yaml"
        same = config.is_file() and config.read_text() == resolved
        if same and not complete and backup.is_dir() and any(backup.rglob("checkpoint")):
            if is_live(run_dir):
                print(f"{run_dir} is being trained by another live process; starting a new run")
                continue
            return run_dir
    return None


def _multi_worker_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """The run directory every worker of a cluster agrees on, and whether it is being resumed.

    Named after the config and the cluster's shape, so a restarted cluster finds its backup
    (on a filesystem all workers share, as Keras' BackupAndRestore expects).

    Raises:
        ConfigError: the run of this config on this cluster has already finished.
    """
    # The cluster's shape, not its addresses: restarted workers may come back elsewhere.
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    shape = {role: len(tasks) for role, tasks in cluster.items()}
    key = config_lib.dump_config(cfg) + json.dumps(shape, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    run_dir = Path(cfg.training.output_dir) / cfg.name / f"multi-worker-{digest}"
    if (run_dir / "metrics.json").exists():
        raise ConfigError(
            f"{run_dir} holds the finished run of this config on this cluster; change `name` "
            "(or move that directory away) to train again."
        )
    resumed = run_dir if (run_dir / "backup").is_dir() else None
    if resumed:
        print(f"resuming the interrupted multi-worker run {run_dir} from its last backup")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, resumed


def _new_run_dir(parent: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(100):
        candidate = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory under {parent}")
