"""Benchmarks remove their work directories (gigabytes of runs, caches and exports) at exit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCRIPT = """
import sys
from workdir import work_dir
work = work_dir("kerasft-test-", keep=sys.argv[1] == "keep")
(work / "runs").mkdir()
print(work, flush=True)
if sys.argv[2] == "fail":
    raise SystemExit("error: the benchmark failed")
"""


def run(keep: str, end: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, keep, end],
        cwd=REPO / "bench",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout


def test_a_benchmarks_work_directory_is_removed_at_exit_unless_kept():
    for end in ("ok", "fail"):
        code, out = run("remove", end)
        assert code == (0 if end == "ok" else 1)
        assert not Path(out.strip().splitlines()[-1]).exists()
    code, out = run("keep", "ok")
    first, work = out.strip().splitlines()
    assert code == 0 and first == f"work directory {work} (kept: --keep)"
    assert (Path(work) / "runs").is_dir()
    shutil.rmtree(work)


def test_compression_offers_keep_for_its_teacher():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "compression.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--keep" in done.stdout
