"""Reports a person reads: a run's page, a comparison of runs, a tuning search's trials.

    write_report(run_dir)           runs/<name>/<timestamp>/report.html (training writes it)
    compare_runs(run_dirs, output)  <output>/report.html: differing config keys, metrics, curves
    tuning_report(directory)        <tuning directory>/report.html: trials and parameters

`python -m kerasft.report RUN_DIR [RUN_DIR ...]` is the command (`kerasft.report.cli`).
"""

from kerasft.report.compare import compare_runs, tuning_report
from kerasft.report.run import write_report

__all__ = ["compare_runs", "tuning_report", "write_report"]
