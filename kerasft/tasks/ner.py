"""Entity-level precision/recall/F1 the way CoNLL's `conlleval` script computes them.

Tags are IOB2 (`B-PER`, `I-PER`, `O`), read leniently like conlleval: an `I-X`
that follows `O` or a different type starts a new entity. An entity counts as
found only when its type and both ends match exactly. `tests/test_ner_metrics.py`
checks this against seqeval (default mode, which mirrors conlleval).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities as `(type, start, end)` with `end` exclusive."""
    found, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-") if tag != "O" else ("O", "", "")
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and (kind is None or label != kind))
        if kind is not None and (prefix == "O" or begins):
            found.append((kind, start, i))
            kind = None
        if begins:
            start, kind = i, label
        if prefix in ("E", "S") and kind is not None:
            found.append((kind, start, i + 1))
            kind = None
    return found


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/F1 over all entities, and the same per entity type.

    Args:
        true: gold tag sequences, one per sentence.
        pred: predicted tag sequences, the same lengths.
    """
    gold_n, pred_n, hit_n = Counter(), Counter(), Counter()
    for t, p in zip(true, pred, strict=True):
        gold, guess = set(spans(t)), set(spans(p))
        gold_n.update(s[0] for s in gold)
        pred_n.update(s[0] for s in guess)
        hit_n.update(s[0] for s in gold & guess)
    per_type = {k: _prf(hit_n[k], pred_n[k], gold_n[k]) for k in sorted(gold_n | pred_n)}
    micro = _prf(sum(hit_n.values()), sum(pred_n.values()), sum(gold_n.values()))
    return {**micro, "per_type": per_type}


def _prf(hit: int, predicted: int, gold: int) -> dict:
    precision = hit / predicted if predicted else 0.0
    recall = hit / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}
