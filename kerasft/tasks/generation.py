"""Scores of generated text against references, with the packages people quote them from.

sacreBLEU for corpus BLEU and chrF (translation), Google's rouge-score for
ROUGE-1/2/Lsum F-measures (summarization, stemmed as in its own examples), and
exact match. All are reported on a 0-100 scale except exact match (0-1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def text_scores(generated: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus scores of `generated` against `references` (one reference per text)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    n = len(references)
    if n == 0:
        return {"examples": 0}
    refs = [list(references)]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
    rouge = {"rouge1": 0.0, "rouge2": 0.0, "rougeLsum": 0.0}
    for text, reference in zip(generated, references, strict=True):
        for key, score in scorer.score(reference, text).items():
            rouge[key] += score.fmeasure
    return {
        "examples": n,
        "exact_match": sum(
            g.strip() == r.strip() for g, r in zip(generated, references, strict=False)
        )
        / n,
        "bleu": float(sacrebleu.corpus_bleu(list(generated), refs).score),
        "chrf": float(sacrebleu.corpus_chrf(list(generated), refs).score),
        **{k: 100.0 * v / n for k, v in rouge.items()},
    }


def example_scores(generated: Sequence[str], references: Sequence[str]) -> list[float]:
    """Sentence-level chrF of each text (0-100): the report's worst examples are ranked by it."""
    import sacrebleu

    return [
        float(sacrebleu.sentence_chrf(g, [r]).score)
        for g, r in zip(generated, references, strict=True)
    ]


def write_predictions(path: Path, sources, references, generated) -> None:
    """One JSON line per example, in input order: source, reference, generated text and its chrF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scores = example_scores(generated, references)
    with path.open("w", encoding="utf-8") as out:
        for source, reference, text, score in zip(
            sources, references, generated, scores, strict=True
        ):
            record = {
                "source": source,
                "reference": reference,
                "generated": text,
                "chrf": round(score, 2),
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_predictions(path: Path) -> list[dict]:
    """The records `write_predictions` wrote (none when the file is missing)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def worst_examples(records: list[dict], n: int = 10) -> list[dict]:
    """The `n` records with the lowest sentence chrF."""
    return sorted(records, key=lambda r: r["chrf"])[:n]
