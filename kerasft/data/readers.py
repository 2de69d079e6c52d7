"""Readers: every supported source → one pandas frame with `text`, `text_pair`, `label` and `line`.

`line` is where the row starts in the source (1-based; a row number for
Parquet and `datasets`), so later checks can name it. All problems raise
`DataError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kerasft import progress
from kerasft.config import DataConfig
from kerasft.data.rows import (
    as_text,
    jsonl_rows,
    label_text,
    name_the_bad_line,
    nested_kind,
    python_encoding,
    refuse_repeated_names,
    undecodable,
)
from kerasft.errors import DataError, first_line
from kerasft.tasks import TaskSpec

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".conll": "conll",
    ".txt": "conll",
}
_DOCSTART = "-DOCSTART-"


def resolve_path(spec: str, key: str = "data.train") -> Path:
    """Turns a config path into a file path; `pkg:<package>/<path>` looks inside an installed package.

    Raises:
        DataError: the file does not exist.
    """
    if spec.startswith("pkg:"):
        package, _, inner = spec[4:].partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise DataError(
                f"`{key}`: package `{package}` named in `{spec}` is not installed. "
                f"Install it (`make install` does for the demo data) or point `{key}` at a file."
            )
        root = Path(next(iter(found.submodule_search_locations))).resolve()
        path = (root / inner).resolve()
        if not path.is_relative_to(root):
            raise DataError(
                f"`{key}`: `{spec}` leaves the package `{package}`; a `pkg:` path names a file "
                f"inside the package. Use a plain path for files elsewhere."
            )
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"`{key}`: data file not found: {path}. Check the path (relative paths start at {Path.cwd()})."
        )
    return path


def read_source(
    spec: str | pd.DataFrame,
    cfg: DataConfig,
    task: TaskSpec,
    key: str = "data.train",
    split: str = "train",
    slices: tuple[str, ...] = (),
):
    """Reads one split's data (a path spec, or a DataFrame from the Python API) into a normalised frame.

    Args:
        slices: further columns to keep (`evaluation.slices`), as `slice:<name>`. Defaults to none.

    Returns:
        (frame, source) where frame has columns text, text_pair (when configured), label, line,
        the slice columns, and source is the file named in messages.
    """
    if isinstance(spec, list):  # a list of row dicts from the Python API
        spec = pd.DataFrame(spec)
    if isinstance(spec, pd.DataFrame):
        raw, source, header_known = spec.reset_index(drop=True), f"<{split} DataFrame>", True
        raw.insert(len(raw.columns), "__line__", np.arange(1, len(raw) + 1))
    else:
        raw, source, header_known = _read_raw(spec, cfg, task, key, split)
    if task.per_token and "__conll__" in raw.attrs:
        if slices:
            raise DataError(
                f"{source}: CoNLL files have no columns for `evaluation.slices: {list(slices)}`. "
                "Use JSON lines with `tokens`, `tags` and the slice columns, or drop the slices."
            )
        return _check(raw, cfg, task, source), source
    frame = pd.DataFrame({"line": raw["__line__"].to_numpy()})
    columns = [c for c in raw.columns if c != "__line__"]
    for field, spec_col, cfg_key in (
        ("text", cfg.text_column, "data.text_column"),
        ("text_pair", cfg.text_pair_column, "data.text_pair_column"),
        ("label", *_target_column(cfg, task)),
    ):
        if spec_col is None:
            continue
        frame[field] = raw[_column(columns, spec_col, cfg_key, source, header_known)].to_numpy()
    for name in slices:
        column = raw[_column(columns, name, "evaluation.slices", source, header_known)]
        frame[f"slice:{name}"] = column.to_numpy()
    return _check(frame, cfg, task, source), source


def _read_raw(
    spec: str, cfg: DataConfig, task: TaskSpec, key: str, split: str
) -> tuple[pd.DataFrame, str, bool]:
    if spec.startswith("hf:"):
        return _read_datasets(spec, cfg, task, key, split)
    name, _, at = spec.partition("@") if "@" in spec and not Path(spec).exists() else (spec, "", "")
    path = resolve_path(name, key)
    fmt = cfg.format
    if fmt == "auto":
        fmt = "datasets" if path.is_dir() else EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension `{path.suffix}`. "
            "Set `data.format` to csv, tsv, jsonl, parquet, conll or datasets."
        )
    if fmt == "datasets":
        return _read_datasets(spec, cfg, task, key, split)
    if path.is_dir():
        raise DataError(f"`{key}`: {path} is a folder; `data.format: {fmt}` needs a file.")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty.")
    try:
        if fmt in ("csv", "tsv"):
            frame, header_known = _read_delimited(path, cfg, fmt, task)
        elif fmt == "jsonl":
            frame, header_known = _read_jsonl(path, cfg), True
        elif fmt == "conll":
            frame, header_known = _read_conll(path, cfg), True
        else:
            frame = pd.read_parquet(path)
            frame["__line__"] = np.arange(1, len(frame) + 1)
            header_known = True
    except UnicodeDecodeError as exc:
        raise undecodable(path, cfg.encoding, "data.encoding", exc) from None
    except LookupError:
        raise DataError(
            f"`data.encoding`: unknown encoding `{cfg.encoding}`. Use e.g. `utf-8` or `latin-1`."
        ) from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        detail = str(exc).strip().splitlines()[-1].rstrip(".")
        if fmt in ("csv", "tsv"):
            keys = ("`data.delimiter`", "`data.quoting: none`")
            name_the_bad_line(path, _separator(cfg, fmt), cfg.encoding, cfg.quoting, detail, keys)
        raise DataError(
            f"{path}: cannot parse as {fmt}: {detail}. Check `data.format`, `data.delimiter` and `data.quoting`."
        ) from None
    if frame.empty:
        raise DataError(
            f"{path}: the file has a header but no rows." if header_known else f"{path}: no rows."
        )
    return frame, str(path), header_known


def _separator(cfg: DataConfig, fmt: str) -> str:
    return cfg.delimiter or ("," if fmt == "csv" else "\t")


def _read_delimited(
    path: Path, cfg: DataConfig, fmt: str, task: TaskSpec
) -> tuple[pd.DataFrame, bool]:
    frame = pd.read_csv(
        path,
        sep=_separator(cfg, fmt),
        encoding=python_encoding(cfg.encoding),
        header=None,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE if cfg.quoting == "none" else csv.QUOTE_MINIMAL,
        skip_blank_lines=True,
        engine="c",
    )
    header = cfg.header
    target = _target_column(cfg, task)[0]
    by_name = any(isinstance(c, str) for c in (cfg.text_column, cfg.text_pair_column, target))
    if header == "auto":
        header = by_name or _looks_like_header(frame, target, task)
    frame["__line__"] = np.arange(1, len(frame) + 1)
    if header:
        names = [str(v).strip() for v in frame.iloc[0, :-1]]
        refuse_repeated_names(path, names)
        frame = frame.iloc[1:].reset_index(drop=True)
        frame.columns = [*names, "__line__"]
    elif by_name:
        raise DataError(
            f"{path}: `data.header: false`, so columns must be given by position (0-based), "
            "e.g. `data.text_column: 1`."
        )
    return frame, bool(header)


def _looks_like_header(frame: pd.DataFrame, label_column: Any, task: TaskSpec) -> bool:
    if not isinstance(label_column, int) or label_column >= frame.shape[1] or len(frame) < 2:
        return False
    first, rest = frame.iloc[0, label_column], frame.iloc[1:1001, label_column]
    if task.numeric or task.generative or all(_is_float(v) for v in rest):
        return not _is_float(first) and all(_is_float(v) for v in rest)
    # String labels: a header is a value never seen again among labels that do repeat.
    distinct = set(rest)
    return first not in distinct and len(rest) >= 10 and len(distinct) <= len(rest) / 2


def _read_jsonl(path: Path, cfg: DataConfig) -> pd.DataFrame:
    rows, lines = [], []
    for chunk, numbers in jsonl_rows(
        path, "jsonl", python_encoding(cfg.encoding), cfg.quoting, 100_000
    ):
        rows += chunk
        lines += numbers
    frame = pd.DataFrame(rows)
    frame["__line__"] = lines
    return frame


def _read_conll(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """`token ... TAG` per line, a blank line between sentences, -DOCSTART- lines skipped."""
    sentences, tags, starts = [], [], []
    words: list[str] = []
    labels: list[str] = []
    start = 0
    with path.open(encoding=python_encoding(cfg.encoding)) as handle:
        for number, text in enumerate(handle, start=1):
            fields = text.split()
            if not fields or fields[0] == _DOCSTART:
                if words:
                    sentences.append(words), tags.append(labels), starts.append(start)
                words, labels = [], []
                continue
            if len(fields) < 2:
                raise DataError(
                    f"{path}:{number}: expected `token TAG`, got {len(fields)} field ({text.strip()!r}). "
                    "Every non-blank line needs a token and its tag."
                )
            if not words:
                start = number
            words.append(fields[0])
            labels.append(fields[-1])
    if words:
        sentences.append(words), tags.append(labels), starts.append(start)
    frame = pd.DataFrame({"text": sentences, "label": tags, "line": starts, "__line__": starts})
    frame.attrs["__conll__"] = True
    return frame


def _read_datasets(
    spec: str, cfg: DataConfig, task: TaskSpec, key: str, split: str
) -> tuple[pd.DataFrame, str, bool]:
    import pyarrow as pa

    body, _, split_name = spec.rpartition("@") if "@" in spec else (spec, "", "")
    split_name = split_name or split
    with progress.datasets_bars_off():  # loading draws datasets' own bars; as they were after
        try:
            ds = _load_datasets_split(body, split_name, key)
            frame = ds.to_pandas()
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise DataError(
                f"`{key}`: {body}: this `datasets` folder cannot be read ({first_line(exc)[:160]}); "
                "its files are damaged. Write it again with `save_to_disk`."
            ) from None
    # Integer class ids stored as ClassLabel become their names, as users see them on the hub.
    for column, feature in ds.features.items():
        names = getattr(feature, "names", None) or getattr(
            getattr(feature, "feature", None), "names", None
        )
        if names and column in frame:
            if hasattr(feature, "names"):
                frame[column] = [names[int(v)] if int(v) >= 0 else "" for v in frame[column]]
            else:
                frame[column] = [[names[int(v)] for v in row] for row in frame[column]]
    if frame.empty:
        raise DataError(f"`{key}`: {spec} has no rows.")
    frame["__line__"] = np.arange(1, len(frame) + 1)
    return frame, f"{body}@{split_name}", True


def _load_datasets_split(body: str, split_name: str, key: str) -> Any:
    """One split of a hub dataset (`hf:name[:config]`) or of a `save_to_disk` folder."""
    import datasets

    try:
        if body.startswith("hf:"):
            name, _, config_name = body[3:].partition(":")
            # huggingface_hub logs each failed request ("... thrown while requesting HEAD ...")
            # before the error below says what to do; offline that is only noise.
            print(f"loading `{name}` split `{split_name}` (`{key}`) from the Hugging Face Hub")
            hub_log = logging.getLogger("huggingface_hub")
            level = hub_log.level
            hub_log.setLevel(logging.ERROR)
            try:
                ds = datasets.load_dataset(name, config_name or None, split=split_name)
            except Exception as exc:  # noqa: BLE001 - every hub failure gets the same advice
                raise DataError(
                    f"`{key}`: cannot load `{name}` split `{split_name}` from the Hugging Face Hub "
                    f"({type(exc).__name__}: unknown name or no network). On a machine with network access "
                    f"save it with `datasets.load_dataset(...).save_to_disk(DIR)` and set `{key}: DIR@{split_name}`."
                ) from None
            finally:
                hub_log.setLevel(level)
        else:
            loaded = datasets.load_from_disk(str(resolve_path(body, key)))
            if isinstance(loaded, datasets.DatasetDict):
                if split_name not in loaded:
                    raise DataError(
                        f"`{key}`: {body} has no split `{split_name}`; it has {', '.join(loaded)}. "
                        f"Write `{body}@<split>`."
                    )
                loaded = loaded[split_name]
            ds = loaded
    except FileNotFoundError as exc:
        raise DataError(f"`{key}`: {body} is not a `datasets` folder ({exc}).") from None
    return ds


def _separator_hint(columns: list) -> str:
    """A hint when a one-column header holds another separator: the file's delimiter is not the
    one read with (a tab-separated `.csv`, a `;`-separated export)."""
    if len(columns) != 1:
        return ""
    for char, shown in (("\t", '"\\t"'), (";", '";"'), ("|", '"|"')):
        if char in str(columns[0]):
            return f" The header looks {shown}-separated: set `data.delimiter: {shown}`."
    return ""


def _column(columns: list, spec: str | int, key: str, source: str, header_known: bool) -> Any:
    if isinstance(spec, int):
        if not 0 <= spec < len(columns):
            raise DataError(
                f"{source}: `{key}: {spec}` is past the last column; the data has {len(columns)} columns (0-based)."
            )
        return columns[spec]
    if spec not in columns:
        present = ", ".join(str(c) for c in columns)
        raise DataError(
            f"{source}: no column `{spec}` (set by `{key}`). Columns present: {present}."
            + _separator_hint(columns)
        )
    if columns.count(spec) > 1:
        raise DataError(
            f"{source}: {columns.count(spec)} columns are named `{spec}` (set by `{key}`); "
            "rename all but one in the header line."
        )
    return spec


def _clean_texts(frame: pd.DataFrame, cfg: DataConfig, task: TaskSpec, source: str) -> pd.Series:
    """Makes the texts (and pairs) stripped strings, or the words of per-token rows lists;
    returns which rows are empty.

    Raises:
        DataError: a list or object where a text belongs, or a per-token row whose words and
            tags do not pair up.
    """
    if task.per_token:
        frame["text"], frame["label"] = _token_rows(frame, source)
        return frame["text"].map(len) == 0
    for field, column, key in (
        ("text", cfg.text_column, "data.text_column"),
        ("text_pair", cfg.text_pair_column, "data.text_pair_column"),
    ):
        _refuse_nested(frame, field, column, key, source, "point it at a column of texts")
    frame["text"] = frame["text"].map(as_text).str.strip()
    empty = frame["text"] == ""
    if "text_pair" in frame:
        frame["text_pair"] = frame["text_pair"].map(as_text).str.strip()
        empty |= frame["text_pair"] == ""
    return empty


def _check(frame: pd.DataFrame, cfg: DataConfig, task: TaskSpec, source: str) -> pd.DataFrame:
    """Cleans texts and validates labels for `task`; drops (or rejects) empty texts."""
    empty = _clean_texts(frame, cfg, task, source)
    if len(frame) and empty.all():
        column = f"`{cfg.text_column}`" + (
            f" or `{cfg.text_pair_column}`" if "text_pair" in frame else ""
        )
        raise DataError(
            f"{source}: every text is empty ({len(frame)} rows; column {column}, set by "
            "`data.text_column`). Check that it names the column holding the texts."
        )
    if empty.any():
        first = int(frame["line"][empty].iloc[0])
        if cfg.empty_text == "error":
            raise DataError(
                f"{source}:{first}: empty text ({int(empty.sum())} rows in all). Fill them in, or set "
                "`data.empty_text: drop`."
            )
        print(
            f"{Path(source).name}: dropped {int(empty.sum())} rows with empty text (first at line {first})"
        )
        frame = frame[~empty].reset_index(drop=True)

    labels = frame["label"]
    if not (task.multi_hot or task.per_token):
        hint = "several labels per text are `task: multi_label`" if task.single_label else ""
        _refuse_nested(frame, "label", *_target_column(cfg, task), source, hint)
    if task.single_label:
        frame["label"] = labels.map(label_text).str.strip()
        bad = frame["label"] == ""
        what = "empty label"
    elif task.multi_hot:
        frame["label"] = labels.map(lambda v: _label_list(v, cfg.label_delimiter))
        if cfg.label_delimiter is None:
            _warn_of_unsplit_labels(frame["label"], source)
        bad = pd.Series(False, index=frame.index)
        what = ""
    elif task.generative:
        frame["label"] = labels.map(as_text).str.strip()
        bad = frame["label"] == ""
        what = "empty target text"
    elif task.numeric:
        frame["label"] = labels.map(_as_float)
        bad = pd.Series(~np.isfinite(frame["label"].to_numpy(dtype=np.float64)), index=frame.index)
        what = "target that is not a finite number"
    else:
        bad = pd.Series(False, index=frame.index)
        what = ""
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}:{int(frame['line'].iloc[row])}: {what} in column `{_target_column(cfg, task)[0]}` "
            f"(got {labels.iloc[row]!r}; {int(bad.sum())} rows in all). Fix or remove those rows."
        )
    return frame


def _refuse_nested(
    frame: pd.DataFrame, field: str, column: Any, key: str, source: str, hint: str = ""
) -> None:
    """A list or object where a text or a single value belongs (a JSON or Parquet column) is
    refused naming its row, rather than trained on as its printed form."""
    if field not in frame:
        return
    nested = frame[field].map(lambda v: nested_kind(v) is not None)
    if not nested.any():
        return
    row = int(np.flatnonzero(nested.to_numpy())[0])
    kind = nested_kind(frame[field].iloc[row])
    count = int(nested.sum())
    raise DataError(
        f"{source}:{int(frame['line'].iloc[row])}: column `{column}` (set by `{key}`) holds {kind}, "
        f"not a single value ({count} row{'s' * (count != 1)} in all); "
        f"{hint or 'point it at a column of single values'}."
    )


def _target_column(cfg: DataConfig, task: TaskSpec) -> tuple[str | int, str]:
    """The target's column and its config key: `data.target_column` for seq2seq, else `data.label_column`."""
    if task.generative:
        return cfg.target_column, "data.target_column"
    return cfg.label_column, "data.label_column"


def _token_rows(frame: pd.DataFrame, source: str) -> tuple[list[list[str]], list[list[str]]]:
    words, tags = [], []
    for text, label, line in zip(frame["text"], frame["label"], frame["line"], strict=True):
        w, t = _as_list(text), _as_list(label)
        if w is None or t is None:
            raise DataError(
                f"{source}:{line}: token classification needs a list of words and a list of tags."
            )
        if len(w) != len(t):
            raise DataError(
                f"{source}:{line}: {len(w)} words but {len(t)} tags; every word needs one tag."
            )
        words.append([str(x) for x in w])
        tags.append([str(x) for x in t])
    return words, tags


def _as_list(value: Any) -> list | None:
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    return None


def _label_list(value: Any, delimiter: str | None) -> list[str]:
    listed = _as_list(value)
    if listed is not None:
        return [text for text in (label_text(v).strip() for v in listed) if text]
    text = label_text(value).strip()
    if not text:
        return []
    parts = text.split(delimiter) if delimiter else [text]
    return [p.strip() for p in parts if p.strip()]


LIKELY_DELIMITERS = "|;,"


def _warn_of_unsplit_labels(labels: pd.Series, source: str) -> None:
    """Warns when every multi_label row has one label and some hold a likely separator:
    labels written as `a|b` with no `data.label_delimiter` are read as one label `a|b`."""
    if not len(labels) or any(len(row) > 1 for row in labels):
        return
    for label in sorted({row[0] for row in labels if row}):
        mark = next((c for c in LIKELY_DELIMITERS if c in label), None)
        if mark:
            print(
                f"warning: {source}: every row has a single label, and labels such as "
                f"{label!r} hold `{mark}`. If they are lists, set `data.label_delimiter: "
                f"'{mark}'`; lists in JSONL or Parquet need none."
            )
            return


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_float(value: Any) -> bool:
    return math.isfinite(_as_float(value))
