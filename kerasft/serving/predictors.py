"""Predictors: one interface over an export's SavedModel and its ONNX models.

`open_predictor(path)` returns a `Predictor` for a SavedModel export (a version
folder or its parent) or an ONNX file written by `export.onnx`. Both read the task,
labels and max length from the export's own contract (`kerasft.json`), tokenize
lengths with the export's tokenizer files, and tag words the same way; they differ
only in how a batch runs (`outputs`, `tag_ids`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.errors import DataError, first_line
from kerasft.serving.versions import load_export, read_labels
from kerasft.tasks import TASKS
from kerasft.tasks.ner import spans

_WORD = re.compile(r"\S+")
DEFAULT_MAX_LENGTH = 128  # exports written without kerasft.json (no model card)


class Predictor:
    """Batches of raw texts (and second texts) in, one output record per text out.

    Attributes:
        labels: label or tag names in id order.
        max_length: the training max length (word tags beyond it are `None`).
        per_token: whether the export tags words (token classification).
        pair: whether it takes sentence pairs (None: not known).
    """

    def __init__(
        self,
        tokenizer: Any,
        labels: list[str],
        max_length: int,
        per_token: bool,
        pair: bool | None = None,
    ):
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.per_token = per_token
        self.pair = pair

    def check_pairs(self, given: bool, model: Any, option: str = "--text-pair-column") -> None:
        """Raises DataError when second texts are given to a single-text model, or missing
        for a sentence-pair one (`option` is what the caller names them by)."""
        if self.pair and not given:
            raise DataError(
                f"{model}: the model takes sentence pairs (it was trained with "
                f"`data.text_pair_column`); pass {option} naming the second text."
            )
        if self.pair is False and given:
            raise DataError(f"{model}: the model takes single texts; leave out {option}.")

    def outputs(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        """The export's named outputs for a batch of texts."""
        raise NotImplementedError

    def tag_ids(self, ids: dict[str, np.ndarray]) -> np.ndarray:
        """Tag ids `[B, T]` for int32 token ids `[B, T]` by input name (token classification)."""
        raise NotImplementedError

    def lengths(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        """Token lengths of the texts (and pairs), for sorting batches by length."""
        encoded = self.tokenizer(texts, pairs, add_special_tokens=False, truncation=False)
        return np.array([len(ids) for ids in encoded["input_ids"]])

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        self.check_pairs(pairs is not None, "the export", "the `pairs` argument")
        if self.per_token:
            tagged = tag_words(texts, self.tokenizer, self.tag_ids, self.labels, self.max_length)
            return [{"tags": r["tags"], "entities": r["entities"]} for r in tagged]
        return records(self.outputs(texts, pairs), self.labels)


class SavedModelPredictor(Predictor):
    """A SavedModel export's raw-text `serving_default` (and `predict_ids` for word tags)."""

    def __init__(self, model_path: str | Path):
        version, loaded = load_export(model_path)
        self.version = version
        missing = [n for n in ("serving_default", "predict_ids") if n not in loaded.signatures]
        if missing:
            present = ", ".join(loaded.signatures) or "none"
            raise DataError(
                f"{version}: not a kerasft export (no `{missing[0]}` signature; it has: {present}). "
                "Pass an export_dir= printed by kerasft.train or kerasft.export."
            )
        self._serve = loaded.signatures["serving_default"]
        self._ids = loaded.signatures["predict_ids"]
        self._inputs = set(self._serve.structured_input_signature[1])
        if "text" not in self._inputs:
            raise DataError(
                f"{version}: this export takes token ids, not text; tokenize with the files in "
                "its assets/."
            )
        again = "Re-export it with `python -m kerasft.export --run RUN_DIR`."
        meta = _read_meta(version / "assets.extra" / "kerasft.json", again)
        if meta.get("task") in TASKS:
            per_token = TASKS[meta["task"]].per_token
        else:  # an export without its contract: its outputs say whether it tags
            per_token = "text_pair" not in self._inputs and "tag" in self._serve.structured_outputs
        labels, tokenizer = _labels_and_tokenizer(version / "assets", meta, again)
        max_length = meta.get("max_length", DEFAULT_MAX_LENGTH)
        pair = "text_pair" in self._inputs
        super().__init__(tokenizer, labels, max_length, per_token, pair)

    def outputs(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        from kerasft._compat import tf

        feed = {"text": tf.constant(texts)}
        if pairs is not None:
            feed["text_pair"] = tf.constant(pairs)
        return {k: v.numpy() for k, v in self._serve(**feed).items()}

    def tag_ids(self, ids: dict[str, np.ndarray]) -> np.ndarray:
        from kerasft._compat import tf

        return self._ids(**{k: tf.constant(v) for k, v in ids.items()})["tag_id"].numpy()


class OnnxPredictor(Predictor):
    """`onnx/<version>/model.onnx` (or `model.int8.onnx`): tokenized in Python with the
    tokenizer files beside it, as in training."""

    def __init__(self, path: Path):
        from kerasft.serving import onnx as onnx_lib

        meta_path = path.parent / onnx_lib.META
        if not path.is_file() or not meta_path.is_file():
            raise DataError(
                f"--model {path}: not an ONNX model written by kerasft (no such file, or no "
                f"{onnx_lib.META} beside it). Pass saved_models/<name>/onnx/<version>/model.onnx."
            )
        onnx_lib.require()
        again = "Export it again with `python -m kerasft.export --run RUN_DIR --onnx`."
        meta = _read_meta(meta_path, again)
        if not isinstance(meta.get("input_names"), list) or meta.get("task") not in TASKS:
            raise DataError(f"{meta_path}: no `input_names` list or known `task` in it. {again}")
        self._names = meta["input_names"]
        labels, tokenizer = _labels_and_tokenizer(path.parent, meta, again)
        try:
            self._run = onnx_lib.runner(path)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors are its own types
            raise DataError(
                f"{path}: cannot load this ONNX model ({first_line(exc)}). {again}"
            ) from None
        unknown = sorted(self._run.inputs - set(self._names))
        if unknown:
            raise DataError(
                f"{path}: the model takes `{unknown[0]}`, which {onnx_lib.META} beside it does not "
                f"list ({', '.join(self._names)}): the two are from different exports. {again}"
            )
        per_token = TASKS[meta["task"]].per_token
        super().__init__(tokenizer, labels, meta["max_length"], per_token, meta.get("pair"))

    def outputs(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        enc = self.tokenizer(
            texts,
            pairs,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="np",
        )
        return self._run({n: enc[n] for n in self._names})

    def tag_ids(self, ids: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(ids)["tag_id"]


def _read_meta(path: Path, again: str) -> dict:
    """An export's `kerasft.json` (`{}` where there is none).

    Raises:
        DataError: it cannot be read or is not a JSON object, naming it and `again`.
    """
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it ({first_line(exc)}). {again}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: not a JSON object. {again}")
    return meta


def _labels_and_tokenizer(directory: Path, meta: dict, again: str) -> tuple[list[str], Any]:
    """The label names (the contract's, else `labels.txt`) and the tokenizer saved in `directory`.

    Raises:
        DataError: either is missing or damaged, naming the file and `again`.
    """
    from transformers import AutoTokenizer

    try:
        labels = meta["labels"] if "labels" in meta else read_labels(directory / "labels.txt")
    except OSError as exc:
        raise DataError(
            f"{directory / 'labels.txt'}: cannot read it ({first_line(exc)}). {again}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"{directory}: cannot load the tokenizer saved there ({first_line(exc)[:160]}); its "
            f"files are missing or damaged. {again}"
        ) from None
    return labels, tokenizer


def open_predictor(model_path: str | Path) -> Predictor:
    """The predictor for an ONNX file (`.onnx`) or a SavedModel export.

    Raises:
        DataError: no such export, one that cannot be loaded, or one that takes token ids.
    """
    if str(model_path).endswith(".onnx"):
        return OnnxPredictor(Path(model_path))
    return SavedModelPredictor(model_path)


def records(out: dict[str, np.ndarray], labels: list[str]) -> list[dict[str, Any]]:
    """One output record per example from a signature's (or ONNX model's) named outputs."""
    if "text" in out:  # seq2seq: the generated text
        return [
            {"generated": t.decode("utf-8") if isinstance(t, bytes) else str(t)}
            for t in out["text"]
        ]
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


def tag_words(
    texts: Sequence[str],
    tokenizer: Any,
    predict: Callable[[dict[str, np.ndarray]], np.ndarray],
    tag_names: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[dict[str, Any]]:
    """Word-level tags and entity spans for raw texts.

    Words are whitespace-separated, as in training data; each word takes the tag
    predicted for its first sub-token (the one that carried it in training).

    Args:
        texts: raw strings.
        tokenizer: the backbone's fast tokenizer.
        predict: maps a dict of int32 token-id arrays `[B, T]` to tag ids `[B, T]`,
            e.g. `lambda x: export.signatures["predict_ids"](**x)["tag_id"].numpy()`.
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
