"""Pages over several runs: a side-by-side comparison, and a tuning search's trials."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from kerasft.errors import DataError
from kerasft.report import page, plots
from kerasft.report.history import read_history
from kerasft.report.run import monitor_of, read_config_and_metrics, read_run_file

IGNORED_KEYS = ("training.output_dir", "tuning")  # differ between runs without changing them


def compare_runs(run_dirs: list[Path], output: Path) -> Path:
    """`output/report.html`: the config keys that differ, metrics side by side, overlaid curves.

    Raises:
        DataError: a directory is not a finished run.
    """
    runs = [_read(run_dir) for run_dir in run_dirs]
    labels = _labels(run_dirs)
    configs = {label: _flatten(run["config"]) for label, run in zip(labels, runs, strict=True)}
    keys = sorted({k for c in configs.values() for k in c})
    differing = [
        k
        for k in keys
        if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1
        and not k.startswith(IGNORED_KEYS)
    ]
    sections = [
        "<h2>Runs</h2>"
        + page.table(
            ["run", "directory"],
            [(lbl, str(r["dir"])) for lbl, r in zip(labels, runs, strict=True)],
        ),
        "<h2>Config keys that differ</h2>"
        + (
            page.table(
                ["key", *labels],
                [[k, *[_cell(configs[lbl].get(k)) for lbl in labels]] for k in differing],
            )
            if differing
            else "<p>The configs are the same.</p>"
        ),
        _metrics_table(runs, labels),
    ]
    histories = {lbl: r["history"] for lbl, r in zip(labels, runs, strict=True)}
    monitors = list(dict.fromkeys(monitor_of(r["config"]) for r in runs))
    if plots.overlaid_curves(
        histories, ["loss", "val_loss", *monitors], output / "plots" / "curves.png"
    ):
        sections.append(
            "<h2>Curves</h2>"
            + page.figure(
                "plots/curves.png",
                "Per-epoch training loss, validation loss and monitored metric of each run.",
                "overlaid training curves",
            )
        )
    return _write(output, f"Comparison of {len(runs)} runs", "", sections)


def tuning_report(directory: Path, output: Path | None = None) -> Path:
    """`report.html` in a `kerasft.tune` directory: trials best first (pruned and failed ones after
    them), each parameter against the objective and, with a second objective, the Pareto front.

    Raises:
        DataError: no results yet (the search has not finished a trial).
    """
    table_path, meta_path = directory / "trials.csv", directory / "search.json"
    if not (table_path.is_file() and meta_path.is_file()):
        raise DataError(
            f"{directory}: no trials.csv and search.json; run `python -m kerasft.tune` until a "
            "trial finishes."
        )
    with table_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    meta = read_run_file(meta_path, json.loads)
    if not rows:
        raise DataError(f"{table_path}: no trials in it.")
    header, objective = list(rows[0]), meta["objective"]
    output = output or directory
    output.mkdir(parents=True, exist_ok=True)
    states = [r["state"] for r in meta["trials"]]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    sections = [
        f"<p>{page.esc(meta['engine'])} search of {page.esc(meta['config'])}: "
        f"{len(rows)} trials ({page.esc(counts)}).</p>",
        f"<h2>Trials, best first by {page.esc(objective)}</h2>",
    ]
    links = [_report_link(t.get("runs", []), output) for t in meta["trials"]]
    numeric = [h not in ("trial_id", "state") for h in header]
    sections.append(
        page.table(
            [*header, "run"],
            [
                [*(row[h] if h in ("trial_id", "state") else _number(row[h]) for h in header), link]
                for row, link in zip(rows, links, strict=True)
            ],
            [*numeric, False],
        )
    )
    sections += _tuning_plots(rows, meta, output)
    return _write(output, f"Tuning: {directory.name}", str(directory), sections)


def _tuning_plots(rows: list[dict], meta: dict, output: Path) -> list[str]:
    """Each parameter against the objective and, with a second objective, the Pareto front."""
    objective, second, params = meta["objective"], meta.get("second_objective"), meta["params"]
    sections = []
    finished = [r for r in rows if r["state"].startswith("complete")]
    if plots.parameter_scatter(finished, params, objective, output / "plots" / "parameters.png"):
        sections.append(
            "<h2>Parameters against the objective</h2>"
            + page.figure(
                "plots/parameters.png",
                f"{objective} of every finished trial against each searched value "
                "(circled: the best trial).",
                "objective against each parameter",
            )
        )
    if second and plots.pareto_front(
        meta["trials"], objective, second, meta["direction"], output / "plots" / "pareto.png"
    ):
        sections.append(
            "<h2>Accuracy against cost</h2>"
            + page.figure(
                "plots/pareto.png",
                f"{objective} against {second} of every finished trial; the Pareto front (no "
                "trial is better on both) is joined up and labelled.",
                "Pareto front",
            )
        )
    return sections


def _report_link(runs: list[str], output: Path) -> Any:
    report = Path(runs[0]) / "report.html" if runs else None
    if report is None or not report.is_file():
        return ""
    href = os.path.relpath(report.resolve(), output.resolve())
    return page.Raw(f'<a href="{page.esc(href)}">report</a>')


def _read(run_dir: Path) -> dict[str, Any]:
    config, metrics = read_config_and_metrics(run_dir)
    history = read_history(run_dir / "history.jsonl")
    return {"dir": run_dir, "config": config, "metrics": metrics, "history": history}


def _labels(run_dirs: list[Path]) -> list[str]:
    """Short names: `<name>/<timestamp>`, made unique."""
    labels = []
    for run_dir in run_dirs:
        label = f"{run_dir.parent.name}/{run_dir.name}"
        while label in labels:
            label += "'"
        labels.append(label)
    return labels


def _metrics_table(runs: list[dict], labels: list[str]) -> str:
    parts = []
    for split in ("validation", "test"):
        keys = list(
            dict.fromkeys(
                k
                for r in runs
                for k, v in r["metrics"].get(split, {}).items()
                if isinstance(v, float | int) and not isinstance(v, bool)
            )
        )
        if keys:
            parts.append(
                f"<h3>{split}</h3>"
                + page.table(
                    ["metric", *labels],
                    [[k, *[r["metrics"].get(split, {}).get(k) for r in runs]] for k in keys],
                    [False] + [True] * len(labels),
                )
            )
    train = [
        ("examples/s", "examples_per_second"),
        ("epochs", "epochs"),
        ("best epoch", "best_epoch"),
    ]
    parts.append(
        "<h3>training</h3>"
        + page.table(
            ["", *labels],
            [
                [name, *[r["metrics"].get("train", {}).get(key) for r in runs]]
                for name, key in train
            ],
            [False] + [True] * len(labels),
        )
    )
    return "<h2>Metrics</h2>" + "".join(parts)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(
            _flatten(value, f"{prefix}{key}.")
            if isinstance(value, dict)
            else {f"{prefix}{key}": value}
        )
    return out


def _cell(value: Any) -> str:
    return "" if value is None else json.dumps(value) if isinstance(value, list | dict) else value


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _write(output: Path, title: str, subtitle: str, sections: list[str]) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    path = output / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page.document(title, subtitle, sections), encoding="utf-8")
    tmp.replace(path)
    return path
