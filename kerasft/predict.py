"""`python -m kerasft.predict`: batch prediction with an export, and prediction helpers.

`tag_words` turns a token-classification model's per-sub-token output into
word-level tags and entity spans with character offsets into the input text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.data.readers import stream_rows
from kerasft.errors import DataError, cli_main
from kerasft.ner_metrics import spans
from kerasft.serving.versions import load_export, read_labels

_WORD = re.compile(r"\S+")


def tag_words(
    texts: Sequence[str],
    tokenizer: Any,
    predict: Callable[[dict[str, np.ndarray]], np.ndarray],
    tag_names: Sequence[str],
    max_length: int = 128,
) -> list[dict[str, Any]]:
    """Word-level tags and entity spans for raw texts.

    Words are whitespace-separated, as in training data; each word takes the tag
    predicted for its first sub-token (the one that carried it in training).

    Args:
        texts: raw strings.
        tokenizer: the backbone's fast tokenizer.
        predict: maps a dict of int32 token-id arrays `[B, T]` to tag ids `[B, T]`,
            e.g. `lambda x: export.signatures["serving_default"](**x)["tag_id"].numpy()`.
        tag_names: tag names in id order.
        max_length: the training max length; words beyond it get no tag (`None`).

    Returns:
        One dict per text: `words` (text, start, end), `tags`, and `entities`
        (`type`, `start`, `end`, `text`; end exclusive, in characters).
    """
    words = [[(m.group(), m.start(), m.end()) for m in _WORD.finditer(t)] for t in texts]
    enc = tokenizer(
        [[w for w, _, _ in ws] for ws in words],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="np",
    )
    names = [n for n in tokenizer.model_input_names if n in enc]
    ids = predict({n: enc[n].astype(np.int32) for n in names})
    results = []
    for row, ws in enumerate(words):
        tags: list[str | None] = [None] * len(ws)
        previous = None
        for position, word in enumerate(enc.word_ids(row)):
            if word is not None and word != previous:
                tags[word] = tag_names[int(ids[row, position])]
            previous = word
        found = spans([t or "O" for t in tags])
        results.append(
            {
                "words": ws,
                "tags": tags,
                "entities": [
                    {
                        "type": kind,
                        "start": ws[a][1],
                        "end": ws[b - 1][2],
                        "text": texts[row][ws[a][1] : ws[b - 1][2]],
                    }
                    for kind, a, b in found
                ],
            }
        )
    return results


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
    """Streams a CSV/TSV/JSONL file through an exported model's raw-text signature into CSV or JSONL.

    Rows are read `sort_window` batches at a time; within each window they are sorted
    by token length and cut into batches, so each batch pads to a similar length,
    and the results are written back in input order. `sort_window=1` predicts in
    file order. Outputs are the same either way; only padding changes.

    Returns:
        The number of rows written.

    Raises:
        DataError: the export takes no raw text, a path is wrong, or a column is missing.
    """
    from tqdm import tqdm

    if batch_size < 1 or sort_window < 1:
        raise DataError("--batch-size and --sort-window must be at least 1.")
    input_path, output_path = Path(input_path), Path(output_path)
    _check_paths(input_path, output_path)
    predict, lengths = _predictor(model_path)
    with input_path.open("rb") as handle:  # one cheap pass for the progress bar's total
        total = sum(1 for _ in handle) - (1 if input_path.suffix.lower() in (".csv", ".tsv") else 0)
    tmp = output_path.with_name(output_path.name + ".partial")
    written = 0
    try:
        with (
            tmp.open("w", encoding="utf-8", newline="") as handle,
            tqdm(total=max(total, 0), unit="rows", desc=f"predicting {input_path.name}") as bar,
        ):
            write = _record_writer(handle, output_path)
            chunks = stream_rows(
                input_path,
                encoding=encoding,
                chunk=batch_size * sort_window,
                encoding_key="--encoding",
            )
            for rows, lines in chunks:
                if not rows:
                    continue
                texts = _column(rows, lines, input_path, text_column)
                pairs = (
                    _column(rows, lines, input_path, text_pair_column) if text_pair_column else None
                )
                records = _predict_window(
                    predict, lengths, texts, pairs, batch_size, sort_window, bar
                )
                for row, record in zip(rows, records, strict=True):
                    write({**(row if keep_columns else {}), **record})
                written += len(rows)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave half a predictions file behind
        raise
    if not written:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{input_path}: no rows to predict (the file has no data rows).")
    tmp.replace(output_path)
    return written


def _predict_window(
    predict: Callable[[list[str], list[str] | None], list],
    lengths: Callable[[list[str], list[str] | None], np.ndarray],
    texts: list[str],
    pairs: list[str] | None,
    batch_size: int,
    sort_window: int,
    bar: Any,
) -> list[dict]:
    """One record per text, in the texts' order, predicted in batches of similar token length."""
    n = len(texts)
    order = np.argsort(lengths(texts, pairs), kind="stable") if sort_window > 1 else np.arange(n)
    records: list[dict] = [{}] * n
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        out = predict(
            [texts[i] for i in batch], [pairs[i] for i in batch] if pairs is not None else None
        )
        for i, record in zip(batch, out, strict=True):
            records[i] = record
        bar.update(len(batch))
    return records


Predict = Callable[[list[str], list[str] | None], list]
Lengths = Callable[[list[str], list[str] | None], np.ndarray]


def _predictor(model_path: str | Path) -> tuple[Predict, Lengths]:
    """The predictor for an ONNX file (`.onnx`) or a SavedModel export."""
    if str(model_path).endswith(".onnx"):
        return _onnx_predictor(Path(model_path))
    return _export_predictor(model_path)


def _onnx_predictor(path: Path) -> tuple[Predict, Lengths]:
    """Like `_export_predictor`, for `onnx/<version>/model.onnx` (or `model.int8.onnx`):
    tokenized in Python with the tokenizer files beside it, as in training.

    Raises:
        DataError: no such file, or no kerasft export contract beside it.
    """
    import json

    from transformers import AutoTokenizer

    from kerasft.serving import onnx as onnx_lib
    from kerasft.tasks import TASKS

    meta_path = path.parent / onnx_lib.META
    if not path.is_file() or not meta_path.is_file():
        raise DataError(
            f"--model {path}: not an ONNX model written by kerasft (no such file, or no {onnx_lib.META} "
            "beside it). Pass saved_models/<name>/onnx/<version>/model.onnx."
        )
    onnx_lib.require()
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    labels = read_labels(path.parent / "labels.txt")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent))
    run = onnx_lib.runner(path)
    names, max_length = meta["input_names"], meta["max_length"]

    def lengths(texts: list[str], pairs: list[str] | None) -> np.ndarray:
        encoded = tokenizer(texts, pairs, add_special_tokens=False, truncation=False)["input_ids"]
        return np.array([len(ids) for ids in encoded])

    if TASKS[meta["task"]].per_token:

        def tag(texts: list[str], pairs: list[str] | None) -> list[dict]:
            results = tag_words(texts, tokenizer, lambda x: run(x)["tag_id"], labels, max_length)
            return [{"tags": r["tags"], "entities": r["entities"]} for r in results]

        return tag, lengths

    def predict(texts: list[str], pairs: list[str] | None) -> list[dict]:
        enc = tokenizer(
            texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="np"
        )
        return _records(run({n: enc[n] for n in names}), labels)

    return predict, lengths


def _export_predictor(model_path: str | Path) -> tuple[Predict, Lengths]:
    """For an export: a function from a batch of texts (and pairs) to one output record per
    text, and one from texts (and pairs) to their token lengths (the export's own tokenizer).

    Raises:
        DataError: no SavedModel there, or one that takes token ids rather than text.
    """
    from kerasft._compat import tf

    version, loaded = load_export(model_path)
    serve = loaded.signatures["serving_default"]
    inputs = set(serve.structured_input_signature[1])
    if "text" not in inputs:
        raise DataError(
            f"{version}: this export takes token ids, not text; tokenize with the files in its assets/."
        )
    labels = read_labels(version / "assets" / "labels.txt")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(version / "assets"))

    def lengths(texts: list[str], pairs: list[str] | None) -> np.ndarray:
        encoded = tokenizer(texts, pairs, add_special_tokens=False, truncation=False)["input_ids"]
        return np.array([len(ids) for ids in encoded])

    if "text_pair" not in inputs and "tag" in serve.structured_outputs:
        ids_fn = loaded.signatures["predict_ids"]

        def tags(x):
            return ids_fn(**{k: tf.constant(v) for k, v in x.items()})["tag_id"].numpy()

        def tag(texts: list[str], pairs: list[str] | None) -> list[dict]:
            return [
                {"tags": r["tags"], "entities": r["entities"]}
                for r in tag_words(texts, tokenizer, tags, labels)
            ]

        return tag, lengths
    return (lambda texts, pairs: _predict(serve, texts, pairs, labels)), lengths


def _check_paths(input_path: Path, output_path: Path) -> None:
    """Raises DataError for an input that is not a file, or an output that cannot be written
    or would replace the input."""
    if not input_path.is_file():
        raise DataError(f"--input: file not found: {input_path}")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise DataError(
            f"--output {output_path} is the input file; writing predictions there would replace "
            "the input. Pass another --output path."
        )
    if output_path.is_dir():
        raise DataError(f"--output {output_path} is a directory; pass a .csv or .jsonl file path.")
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
        values.append(value if isinstance(value, str) else str(value))
    return values


def _record_writer(handle, output_path: Path) -> Callable[[dict], None]:
    """Writes one record per call as a JSON line, or as a CSV row (lists and dicts as JSON)."""
    import csv
    import json as _json

    if output_path.suffix.lower() in (".jsonl", ".json"):
        return lambda record: handle.write(_json.dumps(record, ensure_ascii=False) + "\n")
    writer = None

    def write(record: dict) -> None:
        nonlocal writer
        flat = {
            k: _json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v
            for k, v in record.items()
        }
        if writer is None:
            writer = csv.DictWriter(handle, fieldnames=list(flat))
            writer.writeheader()
        writer.writerow(flat)

    return write


def _predict(serve, texts, pairs, labels) -> list[dict[str, Any]]:
    from kerasft._compat import tf

    feed = {"text": tf.constant(texts)}
    if pairs is not None:
        feed["text_pair"] = tf.constant(pairs)
    return _records({k: v.numpy() for k, v in serve(**feed).items()}, labels)


def _records(out: dict[str, np.ndarray], labels: list[str]) -> list[dict[str, Any]]:
    """One output record per example from a signature's (or ONNX model's) named outputs."""
    if "score" in out:
        return [{"score": float(s)} for s in out["score"]]
    if "predicted" in out:
        return [
            {
                "labels": [labels[j] for j in np.flatnonzero(hit)],
                "probabilities": {labels[j]: round(float(p), 6) for j, p in enumerate(probs)},
            }
            for hit, probs in zip(out["predicted"], out["probabilities"], strict=True)
        ]
    return [
        {
            "label": labels[int(i)],
            "probabilities": {labels[j]: round(float(p), 6) for j, p in enumerate(probs)},
        }
        for i, probs in zip(out["label_id"], out["probabilities"], strict=True)
    ]


@cli_main
def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m kerasft.predict",
        description="Batch prediction with an exported model: CSV/TSV/JSONL in, CSV or JSONL out (by extension).",
        epilog="Streams the input in batches, so memory stays flat on large files. The output is written to "
        "<output>.partial and renamed when complete. Exit status 2: a bad path, column or export.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="an export version directory, its parent (newest version), or an ONNX file written by "
        "`export.onnx` (saved_models/<name>/onnx/<version>/model.onnx or model.int8.onnx)",
    )
    p.add_argument("--input", required=True, help="CSV, TSV or JSONL file with a text column")
    p.add_argument("--output", required=True, help="predictions file: .csv or .jsonl")
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
