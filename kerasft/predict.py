"""Prediction helpers on top of a trained model or an export.

`tag_words` turns a token-classification model's per-sub-token output into
word-level tags and entity spans with character offsets into the input text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kerasft.ner_metrics import spans

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
