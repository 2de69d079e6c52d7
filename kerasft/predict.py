"""`python -m kerasft.predict`: batch prediction with an export, CSV/TSV/JSONL/Parquet/text in.

The export runs through a `kerasft.serving.predictors.Predictor` (SavedModel or ONNX);
`tag_words` (word tags and entity spans of token classification) lives there too.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.cli import cli_main
from kerasft.data.cache import own_partial
from kerasft.data.rows import as_text, nested_kind, stream_rows
from kerasft.errors import DataError, check_stop, stop_between_steps
from kerasft.serving.predictors import Predictor, open_predictor, tag_words

__all__ = ["main", "predict_file", "tag_words"]


def predict_file(
    model_path: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    encoding: str = "utf-8",
    batch_size: int = 64,
    sort_window: int = 50,
    keep_columns: bool = True,
) -> int:
    """Streams a CSV/TSV/JSONL/Parquet/text file through an exported model's raw-text signature into CSV, TSV or JSONL.

    Rows are read `sort_window` batches at a time; within each window they are sorted
    by token length and cut into batches, so each batch pads to a similar length,
    and the results are written back in input order. `sort_window=1` predicts in
    file order. Outputs are the same either way; only padding changes.

    Returns:
        The number of rows written.

    Raises:
        DataError: the export takes no raw text, a path is wrong, or a column is missing.
    """
    from kerasft.progress import bar as progress

    input_path, output_path = Path(input_path), Path(output_path)
    _check_arguments(input_path, output_path, batch_size, sort_window)
    predictor = open_predictor(model_path)
    predictor.check_pairs(text_pair_column is not None, model_path)
    with (
        _partial_file(output_path) as handle,
        progress(_row_count(input_path), "rows", f"predicting {input_path.name}") as bar,
    ):
        write = _record_writer(handle, output_path)
        chunks = stream_rows(
            input_path,
            encoding=encoding,
            chunk=batch_size * sort_window,
            encoding_key="--encoding",
            quoting_key=None,
        )
        written = 0
        for rows, lines in chunks:
            texts, pairs = (
                _column(rows, lines, input_path, c) if c else None
                for c in (text_column, text_pair_column)
            )
            records = _predict_window(predictor, texts, pairs, batch_size, sort_window, bar)
            for row, record in zip(rows, records, strict=True):
                write({**(row if keep_columns else {}), **record})
            written += len(rows)
        if not written:
            raise DataError(f"{input_path}: no rows to predict (the file has no data rows).")
    return written


@contextlib.contextmanager
def _partial_file(output_path: Path):
    """`<output>.<pid>-<random>.partial`, open for writing, renamed to `output_path` when the block
    ends well and removed when it raises: never half a predictions file under the real name.
    Its own name per process, so two predictions into one output each write a whole file (the
    last to finish stays), not one file of both interleaved."""
    tmp = own_partial(output_path)
    try:
        with tmp.open("x", encoding="utf-8", newline="") as handle:
            yield handle
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(output_path)


def _row_count(path: Path) -> int | None:
    """Rows in a text file, for the progress bar (one cheap pass); None for Parquet."""
    if path.suffix.lower() == ".parquet":
        return None
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return max(lines - (1 if path.suffix.lower() in (".csv", ".tsv") else 0), 0)


def _predict_window(
    predictor: Predictor,
    texts: list[str],
    pairs: list[str] | None,
    batch_size: int,
    sort_window: int,
    bar: Any,
) -> list[dict]:
    """One record per text, in the texts' order, predicted in batches of similar token length."""
    n = len(texts)
    order = (
        np.argsort(predictor.lengths(texts, pairs), kind="stable")
        if sort_window > 1
        else np.arange(n)
    )
    records: list[dict] = [{}] * n
    with stop_between_steps():  # Ctrl-C stops between batches
        for start in range(0, n, batch_size):
            check_stop()
            batch = order[start : start + batch_size]
            out = predictor(
                [texts[i] for i in batch], [pairs[i] for i in batch] if pairs is not None else None
            )
            for i, record in zip(batch, out, strict=True):
                records[i] = record
            bar.update(len(batch))
    return records


def _check_arguments(
    input_path: Path, output_path: Path, batch_size: int, sort_window: int
) -> None:
    """Raises DataError for batch sizes below 1, an input that is not a file, or an output
    that cannot be written or would replace the input."""
    if batch_size < 1 or sort_window < 1:
        raise DataError("--batch-size and --sort-window must be at least 1.")
    if not input_path.is_file():
        raise DataError(f"--input: file not found: {input_path}")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise DataError(
            f"--output {output_path} is the input file; writing predictions there would replace "
            "the input. Pass another --output path."
        )
    if output_path.is_dir():
        raise DataError(
            f"--output {output_path} is a directory; pass a .csv, .tsv or .jsonl file path."
        )
    if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(
            f"--output {output_path}: predictions are written as .csv, .tsv or .jsonl; "
            "end the path with one of those."
        )
    if not output_path.parent.is_dir():
        raise DataError(
            f"--output {output_path}: the directory {output_path.parent} does not exist. "
            "Create it first, or pass a path in an existing directory."
        )


def _column(rows: list[dict], lines: list[int], path: Path, column: str) -> list[str]:
    """The `column` of every row as text.

    Raises:
        DataError: a row without that field, naming its line.
    """
    values = []
    for row, line in zip(rows, lines, strict=True):
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):  # a short CSV row
            present = ", ".join(str(k) for k in row) or "none"
            raise DataError(
                f"{path}:{line}: no `{column}` field (fields present: {present}). Every row needs "
                "it; pass --text-column (or --text-pair-column) to name another."
            )
        if nested_kind(value):
            raise DataError(
                f"{path}:{line}: `{column}` holds {nested_kind(value)}, not a text; pass "
                "--text-column (or --text-pair-column) to name a column of texts."
            )
        values.append(as_text(value))
    return values


OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def _plain(value: Any) -> Any:
    """A column passed through from Parquet as JSON or CSV can hold it: bytes as UTF-8 text
    (undecodable bytes escaped), dates and times in ISO 8601, other types as printed."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _record_writer(handle, output_path: Path) -> Callable[[dict], None]:
    """Writes one record per call as a JSON line, or as a CSV/TSV row (lists and dicts as JSON)."""
    import csv
    import json as _json

    dumps = functools.partial(_json.dumps, ensure_ascii=False, default=_plain)
    if output_path.suffix.lower() in (".jsonl", ".json"):
        return lambda record: handle.write(dumps(record) + "\n")
    writer = None

    def write(record: dict) -> None:
        nonlocal writer
        flat = {k: dumps(v) if isinstance(v, list | dict) else _plain(v) for k, v in record.items()}
        if writer is None:
            tab = output_path.suffix.lower() == ".tsv"
            writer = csv.DictWriter(handle, fieldnames=list(flat), delimiter="\t" if tab else ",")
            writer.writeheader()
        writer.writerow(flat)

    return write


@cli_main
def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m kerasft.predict",
        description="Batch prediction with an exported model: CSV/TSV/JSONL/Parquet/.txt in, CSV, TSV or JSONL out (by extension).",
        epilog="Streams the input in batches, so memory stays flat on large files. The output is written to "
        "<output>.partial and renamed when complete. Exit status 2: a bad path, column or export.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="an export version directory, its parent (newest version), or an ONNX file written by "
        "`export.onnx` (saved_models/<name>/onnx/<version>/model.onnx or model.int8.onnx)",
    )
    p.add_argument(
        "--input",
        required=True,
        help="CSV, TSV, JSONL or Parquet file with a text column (or a .txt file, one text per line: column `text`)",
    )
    p.add_argument("--output", required=True, help="predictions file: .csv, .tsv or .jsonl")
    p.add_argument("--text-column", default="text", help="column with the text (default: text)")
    p.add_argument(
        "--text-pair-column", default=None, help="column with the second text, for pair models"
    )
    p.add_argument("--encoding", default="utf-8", help="input encoding (default: utf-8)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per model call (default: 64)")
    p.add_argument(
        "--sort-window",
        type=int,
        default=50,
        help="batches read at a time and sorted by token length, so batches pad less; results keep "
        "the input order. 1: no sorting (default: 50)",
    )
    args = p.parse_args(argv)
    n = predict_file(
        args.model,
        args.input,
        args.output,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        encoding=args.encoding,
        batch_size=args.batch_size,
        sort_window=args.sort_window,
    )
    print(f"predictions={args.output} rows={n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
