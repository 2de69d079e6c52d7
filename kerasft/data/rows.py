"""Streaming rows of the files that are not training splits: predict inputs, `distill.unlabeled`
and `pretrain.files` (text, CSV, TSV, JSONL, Parquet), with the quoting, encodings and
line-numbered `DataError`s of the training readers (`kerasft.data.readers`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kerasft.errors import DataError


def as_text(value: Any) -> str:
    """A cell as text: "" for a missing one, bytes (a Parquet binary column) decoded as UTF-8
    (`nested_kind` refuses those that are not), else the value's printed form."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def nested_kind(value: Any) -> str | None:
    """ "a list" or "an object" for a JSON or Parquet value that is not a single value, or
    "bytes that are not UTF-8" (a text column must not be trained or predicted on as its
    printed form); None otherwise."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple | np.ndarray):
        return "a list"
    if isinstance(value, bytes | bytearray):
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "bytes that are not UTF-8 text"
    return None


def label_text(value: Any) -> str:
    """A label as text, as `as_text`, except that a whole-number float (1.0 from JSON, Parquet
    or a float column) reads as the integer (1) that the same label in a CSV file is."""
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return as_text(value)


def first_undecodable_line(path: Path, encoding: str) -> int:
    """The 1-based number of the first line of `path` that does not decode as `encoding`."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return number
    return 1


# Byte-order marks that name their encoding; UTF-8's decodes as utf-8 and is skipped.
BYTE_ORDER_MARKS = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


def undecodable(path: Path, encoding: str, key: str, exc: UnicodeDecodeError) -> DataError:
    """The one-line error for a file that does not decode as `encoding` (the `key` setting):
    the first bad line, and the encoding to set: the one a byte-order mark names, or a guess."""
    with path.open("rb") as handle:
        start = handle.read(4)
    # UTF-32-LE's mark begins with UTF-16-LE's, so the longer marks are tried first.
    named = next((enc for bom, enc in BYTE_ORDER_MARKS.items() if start.startswith(bom)), None)
    if named and not codecs.lookup(encoding).name.startswith(named):
        setting = f"Pass `{key} {named}`" if key.startswith("--") else f"Set `{key}: {named}`"
        return DataError(
            f"{path}: the file begins with a {named.upper()} byte-order mark, so it is not "
            f"{encoding}. {setting}."
        )
    line = first_undecodable_line(path, encoding)
    return DataError(
        f"{path}:{line}: bytes that are not valid {encoding} ({exc.reason}). "
        f"Set `{key}` to the file's encoding, e.g. `latin-1` or `cp1252`."
    )


ROW_FORMATS = {
    ".txt": "text",
    "": "text",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def stream_rows(
    path: Path,
    *,
    encoding: str = "utf-8",
    quoting: str = "csv",
    chunk: int = 10_000,
    encoding_key: str = "`data.encoding`",
    quoting_key: str | None = "`data.quoting: none`",
):
    """Yields `(rows, lines)`, `chunk` row dicts at a time with the line each starts on,
    without reading the whole file: the one reader of files that are not training splits.

    Formats by extension: `.txt` (one text per line, as `{"text": line}`), `.csv`/`.tsv`
    (a header row; `quoting` as `data.quoting`), `.jsonl`/`.json` (one object per line),
    `.parquet` (row numbers for lines). CSV/TSV lines count from the header and are exact
    unless a quoted field spans lines.

    Raises:
        DataError: an unknown extension or encoding, bytes that do not decode (naming the
            line and `encoding_key`), a JSONL line that is not an object, an empty file, or
            a CSV/TSV that does not parse.
    """
    fmt = ROW_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown extension `{path.suffix}`; use .txt, .csv, .tsv, .jsonl or .parquet."
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(
            f"{encoding_key}: unknown encoding `{encoding}`. Use e.g. utf-8 or latin-1."
        ) from None
    readers = {"text": _text_rows, "jsonl": jsonl_rows, "parquet": _parquet_rows}
    read = readers.get(fmt, functools.partial(_delimited_rows, quoting_key=quoting_key))
    try:
        yield from read(path, fmt, encoding, quoting, chunk)
    except UnicodeDecodeError as exc:
        raise undecodable(path, encoding, encoding_key.strip("`"), exc) from None


def read_text_column(
    path: Path,
    column: str | int,
    *,
    key: str,
    encoding: str = "utf-8",
    quoting: str = "csv",
    encoding_key: str = "`data.encoding`",
    quoting_key: str = "`data.quoting: none`",
) -> list[str]:
    """The stripped, non-empty texts of `column` (a name, or a 0-based position) in a file
    `stream_rows` reads; a `.txt` file is its lines.

    Raises:
        DataError: as `stream_rows`, or the column is missing (naming `key` and the line).
    """
    texts: list[str] = []
    for rows, lines in stream_rows(
        path,
        encoding=encoding,
        quoting=quoting,
        encoding_key=encoding_key,
        quoting_key=quoting_key,
    ):
        for row, line in zip(rows, lines, strict=True):
            name = "text" if path.suffix.lower() in (".txt", "") else column
            if isinstance(name, int):
                names = list(row)
                if name >= len(names):
                    raise DataError(
                        f"{path}:{line}: `{key}: {name}` is past the last column ({len(names)} columns)."
                    )
                name = names[name]
            value = row.get(name)
            if value is None and name not in row:
                present = ", ".join(map(str, row)) or "none"
                raise DataError(
                    f"{path}:{line}: no column `{name}` (set by `{key}`). Columns present: {present}."
                )
            if nested_kind(value):
                raise DataError(
                    f"{path}:{line}: column `{name}` (set by `{key}`) holds {nested_kind(value)}, "
                    "not a text; point it at a column of texts."
                )
            text = as_text(value).strip()
            if text:
                texts.append(text)
    return texts


def _chunks(numbered_rows, chunk: int):
    """`(rows, lines)` lists of `chunk` from `(line, row)` pairs."""
    rows, lines = [], []
    for line, row in numbered_rows:
        rows.append(row)
        lines.append(line)
        if len(rows) == chunk:
            yield rows, lines
            rows, lines = [], []
    if rows:
        yield rows, lines


def _text_rows(path: Path, fmt: str, encoding: str, quoting: str, chunk: int):
    with path.open(encoding=encoding, newline="") as handle:
        numbered = ((n, {"text": line.rstrip("\r\n")}) for n, line in enumerate(handle, start=1))
        yield from _chunks(numbered, chunk)


def jsonl_rows(path: Path, fmt: str, encoding: str, quoting: str, chunk: int):
    with path.open(encoding=encoding) as handle:
        yield from _chunks(_json_objects(path, handle), chunk)


def _json_objects(path: Path, handle):
    """`(line, object)` for each non-blank line of a JSONL file.

    Raises:
        DataError: a line that is not one JSON object, naming it.
    """
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{number}: invalid JSON ({exc.msg}). Each line must be one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}.")
        yield number, row


def _delimited_rows(
    path: Path, fmt: str, encoding: str, quoting: str, chunk: int, quoting_key: str | None = None
):
    try:
        reader = pd.read_csv(
            path,
            sep="\t" if fmt == "tsv" else ",",
            dtype=str,
            keep_default_na=False,
            encoding=python_encoding(encoding),
            quoting=_quoting(quoting),
            chunksize=chunk,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header row and rows.") from None
    first = 2  # line 1 is the header
    try:
        for frame in reader:
            if first == 2:
                _unique_header(path, [str(c) for c in frame.columns], fmt, encoding, quoting)
            if len(frame):  # a header-only file reads as one empty frame
                yield frame.to_dict("records"), list(range(first, first + len(frame)))
            first += len(frame)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        sep = "\t" if fmt == "tsv" else ","
        name_the_bad_line(path, sep, encoding, quoting, detail, (None, quoting_key))
        raise DataError(f"{path}: cannot parse as {fmt} ({detail}).") from None


def _unique_header(path: Path, names: list[str], fmt: str, encoding: str, quoting: str) -> None:
    """Refuses a CSV/TSV header that names a column twice (pandas would read the second as
    `name.1` and the first silently win)."""
    if len(set(names)) == len(names) and not any(_mangled(n, names) for n in names):
        return
    with path.open(encoding=python_encoding(encoding), newline="") as handle:
        sep = "\t" if fmt == "tsv" else ","
        header = next(csv.reader(handle, delimiter=sep, quoting=_quoting(quoting)), [])
    refuse_repeated_names(path, [h.strip() for h in header])


def refuse_repeated_names(path: Path, names: list[str]) -> None:
    """Refuses a header (line 1 of `path`) that names a column twice."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(
            f"{path}:1: the header names column `{twice[0]}` {names.count(twice[0])} times; "
            "give each column its own name."
        )


def _mangled(name: str, names: list[str]) -> bool:
    base, dot, number = name.rpartition(".")
    return bool(dot) and number.isdigit() and base in names


def name_the_bad_line(
    path: Path, sep: str, encoding: str, quoting: str, detail: str, keys: tuple[str | None, ...]
) -> None:
    """Raises pandas' two common CSV parse errors naming the file's line: pandas counts
    records from the file's start (a quoted text with line breaks is one record over several
    lines), header or not.

    Args:
        keys: the settings of the delimiter and of `none` quoting, for the advice; None
            where the command has no such setting.
    """
    extra = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", detail)
    unclosed = re.search(r"EOF inside string starting at row (\d+)", detail)
    if not (extra or unclosed):
        return
    record = int(extra.group(2)) - 1 if extra else int(unclosed.group(1))
    line = 1
    with path.open(encoding=python_encoding(encoding), newline="") as handle:
        reader = csv.reader(handle, delimiter=sep, quoting=_quoting(quoting))
        try:
            for _ in range(record):
                next(reader)
                line = reader.line_num + 1
        except (StopIteration, csv.Error):
            return
    shown = "tab" if sep == "\t" else f"`{sep}`"
    if extra:
        raise DataError(
            f"{path}:{line}: {extra.group(3)} fields where the first line has {extra.group(1)}. "
            f'A text that holds a {shown} must be quoted ("...")'
            + (f", or set {keys[0]}." if keys[0] else ".")
        )
    raise DataError(
        f"{path}:{line}: a quote opened on this line is never closed. Close it"
        + (f", or set {keys[1]} if quotes are part of the texts." if keys[1] else ".")
    )


def python_encoding(encoding: str) -> str:
    """`encoding` as Python opens it: UTF-8 as utf-8-sig, which reads plain UTF-8 too and drops
    a byte-order mark that would otherwise stick to the first column."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _quoting(quoting: str) -> int:
    return csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL


def _parquet_rows(path: Path, fmt: str, encoding: str, quoting: str, chunk: int):
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({str(exc)[:160]}).") from None
    first = 1
    for batch in source.iter_batches(batch_size=chunk):
        rows = batch.to_pylist()
        yield rows, list(range(first, first + len(rows)))
        first += len(rows)
